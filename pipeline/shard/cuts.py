"""Shot-cut detection: PySceneDetect's detectors fed our own low-resolution frames, one by one.

PySceneDetect is only asked to score frames; it never opens the (4K) file itself. Every frame is
passed with its exact presentation timestamp (`Timecode(pts, time_base)`), so a cut is reported
as the timestamp of the first frame of the new shot, in the same clock as the stored frames.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # scenedetect and PyAV load only where frames are analysed
    import av

DETECTORS = ("adaptive", "content")


@dataclass(frozen=True)
class CutSettings:
    """Which detector, its threshold (None: the detector's own default) and the analysis size."""

    detector: str = "adaptive"
    threshold: float | None = None
    min_shot_s: float = 0.5
    width: int = 256  # width of the low-resolution stream the detector sees


def make_detector(settings: CutSettings):
    """Build a fresh PySceneDetect detector (AdaptiveDetector or ContentDetector)."""
    from scenedetect import AdaptiveDetector, ContentDetector

    if settings.detector == "adaptive":
        kw = {} if settings.threshold is None else {"adaptive_threshold": settings.threshold}
        return AdaptiveDetector(min_scene_len=float(settings.min_shot_s), **kw)
    if settings.detector == "content":
        kw = {} if settings.threshold is None else {"threshold": settings.threshold}
        return ContentDetector(min_scene_len=float(settings.min_shot_s), **kw)
    raise ValueError(f"unknown detector {settings.detector!r}; choose one of {DETECTORS}")


def analysis_size(width: int, height: int, target_width: int) -> tuple[int, int]:
    """Size of the low-resolution copy: `target_width` wide (never wider than the source), even sides."""
    w = min(target_width, width)
    h = max(2, round(height * w / width / 2) * 2)
    return max(2, w // 2 * 2), h


class CutTracker:
    """Feeds frames to a detector and collects cut timestamps (seconds).

    `feed` takes the decoded frame; it scales it down once (area-averaged, in swscale) to the
    analysis size and hands a BGR array to the detector.
    """

    def __init__(self, settings: CutSettings, width: int, height: int, fps: float, time_base: Fraction):
        self.detector = make_detector(settings)
        self.size = analysis_size(width, height, settings.width)
        self.fps = Fraction(fps).limit_denominator(1001 * 1000)
        self.time_base = time_base
        self.cuts: list[float] = []
        self._last = None

    def _timecode(self, pts: int):
        from scenedetect import FrameTimecode
        from scenedetect.common import Timecode

        return FrameTimecode(Timecode(pts=pts, time_base=self.time_base), fps=self.fps)

    def feed(self, frame: av.VideoFrame) -> None:
        small = frame.reformat(*self.size, format="bgr24", interpolation="AREA").to_ndarray()
        self.feed_array(frame.pts, small)

    def feed_array(self, pts: int, bgr: np.ndarray) -> None:
        tc = self._timecode(pts)
        self._last = tc
        self.cuts.extend(c.seconds for c in self.detector.process_frame(tc, bgr))

    def finish(self) -> list[float]:
        """Flush the detector (end of stream) and return all cut times found, ascending."""
        if self._last is not None:
            self.cuts.extend(c.seconds for c in self.detector.post_process(self._last))
        return sorted(set(self.cuts))


def shots_from_cuts(cuts: list[float], start_s: float, end_s: float) -> list[list[float]]:
    """[[start, end), ...] shots covering [start_s, end_s) split at each cut strictly inside it."""
    inner = [c for c in sorted(cuts) if start_s < c < end_s]
    bounds = [start_s, *inner, end_s]
    return [[bounds[i], bounds[i + 1]] for i in range(len(bounds) - 1)]
