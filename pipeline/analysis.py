"""`dora-data analyze`: the dataset analysis of the paper (section 3.3, appendix A.2, Figure 2).

One decoding pass per video (the shard stage's decoder) gives, at `fps` samples per second,
(a) mean CIE L* lightness scaled to [0, 1] and (b, c) detected objects, and from every frame
(d) shot cuts with the shard stage's cut detector. Cuts are reused from a shard folder's
dataset.json when the source's checksum matches, and then not recomputed.
"""

from __future__ import annotations

import json
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from pipeline.cuts import CutSettings, CutTracker, analysis_size, shots_from_cuts
from pipeline.decode import iter_frames
from pipeline.errors import InputError
from pipeline.probe import VideoInfo, probe
from pipeline.settings import slot
from pipeline.sources import Source, sha256_of

# sRGB (D65) -> Y row of the XYZ matrix, and the CIE L* constants (as skimage.color.rgb2lab uses them)
Y_FROM_RGB = np.array([0.212671, 0.715160, 0.072169])
ANALYSIS_WIDTH = 640


@dataclass(frozen=True)
class AnalyzeSettings:
    fps: float = 1.0
    detector: str = "offline"
    weights: str | None = None
    threshold: float = 0.5
    labels: tuple[str, ...] = ()  # count only these classes (empty: all)
    cuts: CutSettings = field(default_factory=CutSettings)


def lightness(rgb: np.ndarray) -> float:
    """Mean CIE L* of an sRGB image (uint8 HxWx3), divided by 100 (Figure 2a's 0-1 scale)."""
    c = rgb.astype(np.float64) / 255.0
    lin = np.where(c > 0.04045, ((c + 0.055) / 1.055) ** 2.4, c / 12.92)
    y = lin @ Y_FROM_RGB
    f = np.where(y > 0.008856, np.cbrt(y), 7.787 * y + 16.0 / 116.0)
    return float((116.0 * f - 16.0).mean() / 100.0)


def analysis_frame(frame) -> np.ndarray:
    """The RGB copy that lightness and detection look at: ANALYSIS_WIDTH wide (never wider than the source)."""
    size = analysis_size(frame.width, frame.height, ANALYSIS_WIDTH)
    return frame.reformat(*size, format="rgb24", interpolation="AREA").to_ndarray()


def known_cuts(path: Path, shard_dirs: list[Path]) -> list[float] | None:
    """Cut times from a shard folder whose dataset.json lists a video with this file's sha256."""
    if not shard_dirs:
        return None
    digest = sha256_of(path)
    for d in shard_dirs:
        meta = json.loads((d / "dataset.json").read_text())
        for v in meta["videos"]:
            if v["sha256"] == digest:
                return [s[0] for s in v["shots"][1:]]
    return None


_DETECTOR: dict = {}


def _detector(s: AnalyzeSettings):
    key = (s.detector, s.weights, s.threshold)
    if key not in _DETECTOR:
        from pipeline.detectors import make_detector

        _DETECTOR[key] = make_detector(s.detector, Path(s.weights) if s.weights else None, s.threshold)
    return _DETECTOR[key]


def analyze_video(source: Source, s: AnalyzeSettings, cuts_known: list[float] | None = None,
                  progress=None, info: VideoInfo | None = None) -> dict:
    """Every measure of one video (see the module docstring); `info`: its probe, if already made."""
    info = info or probe(str(source.path))
    det = _detector(s)
    tracker = None if cuts_known is not None else CutTracker(s.cuts, info.width, info.height, info.fps,
                                                             info.time_base)
    times, light, counts, classes = [], [], [], {}
    prev, last, n = None, info.start_s, 0
    for t, frame in iter_frames(str(source.path), info.start_s, None):
        if tracker is not None:
            tracker.feed(frame)
        if prev is None or slot(t, info.start_s, s.fps) > slot(prev, info.start_s, s.fps):
            rgb = analysis_frame(frame)
            labels = [x for x in det(rgb) if not s.labels or x in s.labels]
            times.append(round(t, 6))
            light.append(lightness(rgb))
            counts.append(len(labels))
            for x in labels:
                classes[x] = classes.get(x, 0) + 1
        prev, last, n = t, t, n + 1
        if progress is not None and n % 30 == 0:
            progress(30)
    cuts = tracker.finish() if tracker is not None else cuts_known
    end = last + 1.0 / info.fps
    shots = shots_from_cuts(cuts, info.start_s, end)
    return {"name": source.name, "source": str(source.path), "duration_s": round(end - info.start_s, 6),
            "fps": info.fps, "shots": len(shots), "cuts_s": [round(c, 6) for c in cuts],
            "cuts_from": "detected" if tracker is not None else "dataset.json",
            "lightness": {"t": times, "L": light}, "objects": {"t": times, "count": counts},
            "classes": dict(sorted(classes.items(), key=lambda kv: (-kv[1], kv[0]))), "detector": det.name}


def _job(source: Source, s: AnalyzeSettings, cuts: list[float] | None, queue, info: VideoInfo) -> dict:
    return analyze_video(source, s, cuts, progress=queue.put, info=info)


def analyze(sources: list[Source], s: AnalyzeSettings, shard_dirs: list[Path], workers: int, keep_going: bool,
            quiet: bool = False) -> tuple[list[dict], dict[str, str]]:
    """Analyse videos in parallel (one process per video), with a frames/s progress bar over all of
    them. Returns (results, name -> error line)."""
    results, failed = {}, {}
    _detector(s)  # a missing weights file or a bad --detector stops here, before any work
    infos: dict[str, VideoInfo] = {}
    for src in sources:  # unreadable inputs are reported before any work starts
        try:
            infos[src.name] = probe(str(src.path))
        except InputError as e:
            if not keep_going:
                raise
            failed[src.name] = str(e)
    sources = [x for x in sources if x.name in infos]
    known = {src.name: known_cuts(src.path, shard_dirs) for src in sources}
    total = sum(max(1, round(i.duration_s * i.fps)) for i in infos.values())
    bar = tqdm(total=total, unit="frame", desc=f"analyze {len(sources)} video(s)", disable=quiet,
               dynamic_ncols=True)

    def done(name: str, fn) -> None:
        try:
            results[name] = fn()
        except InputError as e:
            if not keep_going:
                raise
            failed[name] = str(e)

    try:
        if workers <= 1 or len(sources) == 1:
            for src in sources:
                done(src.name, lambda src=src: analyze_video(src, s, known[src.name], bar.update, infos[src.name]))
        else:
            import multiprocessing as mp

            ctx = mp.get_context("spawn")
            with ctx.Manager() as manager, ProcessPoolExecutor(min(workers, len(sources)), mp_context=ctx) as pool:
                queue = manager.Queue()
                futs = {pool.submit(_job, src, s, known[src.name], queue, infos[src.name]): src.name
                        for src in sources}
                pending = set(futs)
                while pending:
                    finished, pending = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
                    while not queue.empty():
                        bar.update(queue.get())
                    for fut in finished:
                        done(futs[fut], fut.result)
    finally:
        bar.close()
    return [results[src.name] for src in sources if src.name in results], failed
