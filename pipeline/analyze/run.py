"""`dora-data analyze`: the dataset analysis of the paper (section 3.3, appendix A.2, Figure 2).

One decoding pass per video (the shard stage's decoder) gives, at `fps` samples per second,
(a) mean CIE L* lightness scaled to [0, 1] and (b, c) detected objects (frames go to the detector in
batches), and from every frame (d) shot cuts with the shard stage's cut detector. Cuts are reused
from a shard folder's dataset.json when the source's checksum matches, and then not recomputed.
`minutes` analyses only the first N minutes of each input, so that inputs of different length are
compared over the same duration (the paper compares videos "of the same length").
A folder of images is one sequence: image i is the sample at i / fps s, and each image is its own shot.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from pipeline.analyze.detectors import DetectorOptions, detect_batch
from pipeline.analyze.inputs import Input, images_in
from pipeline.errors import InputError
from pipeline.format import ShardFolder
from pipeline.shard import CutSettings, CutTracker, analysis_size, shots_from_cuts
from pipeline.video import VideoInfo, iter_frames, probe, sha256_of, slot
from pipeline.workers import ErrorPolicy, Task, reraise, run_tasks

# sRGB (D65) -> Y row of the XYZ matrix, and the CIE L* constants (as skimage.color.rgb2lab uses them)
Y_FROM_RGB = np.array([0.212671, 0.715160, 0.072169])
ANALYSIS_WIDTH = 640


@dataclass(frozen=True)
class AnalyzeSettings:
    fps: float = 1.0
    detector: str = "offline"
    det: DetectorOptions = field(default_factory=DetectorOptions)
    labels: tuple[str, ...] = ()  # count only these classes (empty: all)
    minutes: float | None = None  # analyse only the first N minutes of each input
    batch: int = 8  # frames per detector call
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


def detector_size(w: int, h: int, det) -> tuple[int, int] | None:
    """The frame size a detector asks for (long side = its `input_size`, never upscaled); None: the analysis copy."""
    want = getattr(det, "input_size", None)
    if not want:
        return None
    s = min(1.0, want / max(w, h))
    return max(1, round(w * s)), max(1, round(h * s))


def known_cuts(path: Path, shard_dirs: list[Path]) -> list[float] | None:
    """Cut times from a shard folder whose dataset.json lists a video with this file's sha256."""
    if not shard_dirs:
        return None
    digest = sha256_of(path)
    for d in shard_dirs:
        meta = ShardFolder(d).read_index() or {"videos": []}
        for v in meta["videos"]:
            if v["sha256"] == digest:
                return [s[0] for s in v["shots"][1:]]
    return None


_DETECTOR: dict = {}


def get_detector(s: AnalyzeSettings):
    """The detector of these settings, built once per process."""
    key = (s.detector, s.det)
    if key not in _DETECTOR:
        from pipeline.analyze.detectors import make_detector

        _DETECTOR[key] = make_detector(s.detector, s.det)
    return _DETECTOR[key]


class Series:
    """Per-sample measures of one input; detection frames are sent to the detector in batches."""

    def __init__(self, det, s: AnalyzeSettings):
        self.det, self.s = det, s
        self.t: list[float] = []
        self.light: list[float] = []
        self.count: list[int] = []
        self.unique: list[int] = []
        self.classes: dict[str, int] = {}
        self.rows: list[tuple] = []  # (t, label, score, x0, y0, x1, y1)
        self.pending: list[tuple[float, np.ndarray]] = []
        self.example: tuple[int, float, np.ndarray | None, list] = (-1, 0.0, None, [])  # most classes seen

    def add(self, t: float, light_rgb: np.ndarray, det_rgb: np.ndarray | None) -> None:
        self.t.append(round(t, 6))
        self.light.append(lightness(light_rgb))
        self.pending.append((round(t, 6), light_rgb if det_rgb is None else det_rgb))
        if len(self.pending) >= self.s.batch:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        found = detect_batch(self.det, [f for _, f in self.pending])
        for (t, frame), dets in zip(self.pending, found, strict=True):
            dets = [d for d in dets if not self.s.labels or d.label in self.s.labels]
            self.count.append(len(dets))
            self.unique.append(len({d.label for d in dets}))
            if self.unique[-1] > self.example[0]:
                self.example = (self.unique[-1], t, frame, dets)
            for d in dets:
                self.classes[d.label] = self.classes.get(d.label, 0) + 1
                self.rows.append((t, d.label, d.score, *d.box))
        self.pending = []

    def result(self) -> dict:
        self.flush()
        classes = dict(sorted(self.classes.items(), key=lambda kv: (-kv[1], kv[0])))
        return {"lightness": {"t": self.t, "L": self.light},
                "objects": {"t": self.t, "count": self.count, "unique": self.unique},
                "classes": classes, "unique_classes": len(classes), "detections": self.rows,
                "example": {"t": self.example[1], "frame": self.example[2], "detections": self.example[3]}}


def _video_series(src: Input, s: AnalyzeSettings, det, cuts_known, progress, info: VideoInfo) -> dict:
    end_s = info.start_s + s.minutes * 60 if s.minutes else None
    tracker = None if cuts_known is not None else CutTracker(s.cuts, info.width, info.height, info.fps,
                                                             info.time_base)
    series = Series(det, s)
    size = detector_size(info.width, info.height, det)
    prev, last, n = None, info.start_s, 0
    for t, frame in iter_frames(str(src.path), info.start_s, end_s):
        if tracker is not None:
            tracker.feed(frame)
        if prev is None or slot(t, info.start_s, s.fps) > slot(prev, info.start_s, s.fps):
            rgb = analysis_frame(frame)
            big = frame.reformat(*size, format="rgb24", interpolation="AREA").to_ndarray() if size else None
            series.add(t, rgb, big)
        prev, last, n = t, t, n + 1
        if progress is not None and n % 30 == 0:
            progress(30)
    cuts = tracker.finish() if tracker is not None else [c for c in cuts_known if end_s is None or c < end_s]
    end = last + 1.0 / info.fps
    return {"duration_s": round(end - info.start_s, 6), "fps": info.fps,
            "shots": len(shots_from_cuts(cuts, info.start_s, end)), "cuts_s": [round(c, 6) for c in cuts],
            "cuts_from": "detected" if tracker is not None else "dataset.json", **series.result()}


def _image_series(src: Input, s: AnalyzeSettings, det, progress) -> dict:
    from PIL import Image, UnidentifiedImageError

    files = images_in(src.path)
    if s.minutes:
        files = files[:max(1, round(s.minutes * 60 * s.fps))]
    series = Series(det, s)
    for i, f in enumerate(files):
        try:
            with Image.open(f) as im:
                im = im.convert("RGB")
                w, h = im.size
                light = np.asarray(im.resize(analysis_size(w, h, ANALYSIS_WIDTH), Image.BOX))
                size = detector_size(w, h, det)
                big = np.asarray(im.resize(size, Image.BOX)) if size else None
        except (OSError, UnidentifiedImageError, ValueError):
            raise InputError(f"{f}: not a readable image; remove or replace it") from None
        series.add(i / s.fps, light, big)
        if progress is not None:
            progress(1)
    n = len(files)
    return {"duration_s": round(n / s.fps, 6), "fps": s.fps, "shots": n,
            "cuts_s": [round(i / s.fps, 6) for i in range(1, n)], "cuts_from": "images (each image is a shot)",
            **series.result()}


def analyze_input(src: Input, s: AnalyzeSettings, cuts_known: list[float] | None = None, progress=None,
                  info: VideoInfo | None = None) -> dict:
    """Every measure of one input (see the module docstring); `info`: a video's probe, if already made."""
    det = get_detector(s)
    if src.kind == "images":
        body = _image_series(src, s, det, progress)
    else:
        body = _video_series(src, s, det, cuts_known, progress, info or probe(str(src.path)))
    short = s.minutes is not None and body["duration_s"] < s.minutes * 60 - 1.0 / max(body["fps"], 1e-9)
    return {"name": src.name, "label": src.label, "kind": src.kind, "source": str(src.path),
            "minutes": s.minutes, "shorter_than_minutes": short, **body, "detector": det.name}


def _job(src: Input, s: AnalyzeSettings, cuts: list[float] | None, info: VideoInfo | None, progress) -> dict:
    return analyze_input(src, s, cuts, progress=progress, info=info)


def _planned_frames(src: Input, info: VideoInfo | None, s: AnalyzeSettings) -> int:
    if info is None:
        n = len(images_in(src.path))
        return min(n, round(s.minutes * 60 * s.fps)) if s.minutes else n
    dur = min(info.duration_s, s.minutes * 60) if s.minutes else info.duration_s
    return max(1, round(dur * info.fps))


def analyze(sources: list[Input], s: AnalyzeSettings, shard_dirs: list[Path], workers: int,
            on_error: ErrorPolicy = reraise, quiet: bool = False) -> list[dict]:
    """Analyse inputs (in parallel processes when workers > 1), with a frames/s progress bar over all
    of them. Returns the results in input order; an input that cannot be used goes to `on_error`."""
    get_detector(s)  # missing weights or a bad --detector / --vocabulary stop here, before any work
    infos: dict[str, VideoInfo | None] = {}
    for src in sources:  # unreadable inputs are reported before any work starts
        try:
            infos[src.name] = probe(str(src.path)) if src.kind == "video" else None
        except InputError as e:
            on_error(src.name, e)
    sources = [x for x in sources if x.name in infos]
    known = {src.name: known_cuts(src.path, shard_dirs) if src.kind == "video" else None for src in sources}
    total = sum(_planned_frames(src, infos[src.name], s) for src in sources)
    bar = tqdm(total=total, unit="frame", desc=f"analyze {len(sources)} input(s)", disable=quiet,
               dynamic_ncols=True)
    tasks = [Task(src.name, _job, (src, s, known[src.name], infos[src.name])) for src in sources]
    try:
        done = run_tasks(tasks, workers, on_error, on_progress=bar.update)
    finally:
        bar.close()
    return [done.results[i] for i in range(len(sources)) if i in done.results]
