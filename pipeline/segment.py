"""One work unit: decode a time segment once and derive cuts, face-blurred JPEG frames and metadata.

Source frames in [start_s - margin, end_s + margin) are decoded; all of them feed the cut
detector at low resolution, only cuts inside [start_s, end_s) are kept. A frame is stored when it
is the first in its 1/fps slot (`settings.slot`), so the choice does not depend on where units
begin. Faces found on a stored frame are also hidden on the stored frames before and after it;
the neighbours across the unit's borders are decoded (in the margins) for that purpose.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import av
import cv2
import numpy as np

from pipeline.cuts import CutTracker
from pipeline.decode import iter_frames
from pipeline.errors import InputError
from pipeline.faces import FaceDetector, anonymize
from pipeline.probe import VideoInfo
from pipeline.settings import ShardSettings, slot, stored_size
from pipeline.units import Unit, UnitWriter

_DETECTORS: dict = {}


def _face_detector(settings: ShardSettings) -> FaceDetector:
    key = settings.faces
    if key not in _DETECTORS:  # one model per worker process
        _DETECTORS[key] = FaceDetector(settings.faces)
    return _DETECTORS[key]


@dataclass
class _Stored:
    t: float
    local_index: int
    bgr: np.ndarray


class _FrameSink:
    """Detects, hides and JPEG-encodes stored frames on one background thread, in order.

    Decoding (main thread) overlaps with CenterFace and JPEG work. Tasks run in submission order
    on a single thread, so frame j is finished after the faces of frame j+1 are known (the +-1
    carry-over) and results are written in time order: the output does not depend on timing.
    """

    MAX_QUEUED = 8  # bounds memory when decoding runs ahead of detection

    def __init__(self, detector: FaceDetector | None, settings: ShardSettings, write: Callable):
        self.detector, self.settings, self.write = detector, settings, write
        self.pool = ThreadPoolExecutor(1)
        self.queue: deque[Future] = deque()
        self.prev: Future | None = None  # faces of the stored frame before the pending one
        self.pending: tuple[_Stored, Future] | None = None
        self.params = [cv2.IMWRITE_JPEG_QUALITY, settings.quality]

    def _submit(self, fn, *args) -> Future:
        while len(self.queue) >= self.MAX_QUEUED:
            self.queue.popleft().result()
        fut = self.pool.submit(fn, *args)
        self.queue.append(fut)
        return fut

    def _detect(self, bgr: np.ndarray) -> Future:
        return self._submit(self.detector.detect, bgr)

    def before(self, bgr: np.ndarray) -> None:
        """The last stored frame before the unit: only its faces are needed."""
        self.prev = self._detect(bgr) if self.detector is not None else None

    def push(self, frame: _Stored) -> None:
        if self.detector is None:
            self._submit(self._finish, frame, None, None, None)
            return
        faces = self._detect(frame.bgr)
        self._close_pending(faces)
        self.pending = (frame, faces)

    def after(self, bgr: np.ndarray | None) -> None:
        """The first stored frame after the unit (None at the end of the video)."""
        if self.detector is not None:
            self._close_pending(self._detect(bgr) if bgr is not None else None)

    def _close_pending(self, next_faces: Future | None) -> None:
        if self.pending is None:
            return
        frame, faces = self.pending
        self._submit(self._finish, frame, self.prev, faces, next_faces)
        self.prev, self.pending = faces, None

    def _finish(self, f: _Stored, prev: Future | None, own: Future | None, nxt: Future | None) -> None:
        n_faces = n_blurred = 0
        if own is not None:
            boxes = [x.result() for x in (prev, own, nxt) if x is not None]
            n_faces = len(own.result())
            n_blurred = anonymize(f.bgr, np.concatenate(boxes), self.settings.faces)
        ok, jpg = cv2.imencode(".jpg", f.bgr, self.params)
        self.write(f.t, f.local_index, jpg.tobytes(), n_faces, n_blurred)

    def close(self) -> None:
        """Wait for every task; re-raise the first failure."""
        try:
            for fut in self.queue:
                fut.result()
        finally:
            self.pool.shutdown(wait=True, cancel_futures=True)

    def abort(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


def process_unit(unit: Unit, info: VideoInfo, settings: ShardSettings, writer: UnitWriter,
                 progress: Callable[[int], None] = lambda n: None, threads: int = 0) -> None:
    """Decode `unit`'s time range once and write its frames and cuts through `writer`."""
    a, b = unit.start_s, unit.end_s
    margin = settings.margin_s
    size = stored_size(info.width, info.height, settings.short_side)
    cuts = CutTracker(settings.cuts, info.width, info.height, info.fps, info.time_base)
    detector = _face_detector(settings) if settings.blur_faces else None
    sink = _FrameSink(detector, settings, writer.add_frame)
    prev_t: float | None = None
    n_in_unit = 0
    last_t, last_dt = None, 0.0
    before: av.VideoFrame | None = None
    after_done = False
    unreported = 0
    try:
        for t, frame in iter_frames(info.path, max(info.start_s, a - margin), None if b is None else b + margin,
                                    threads=threads):
            if prev_t is not None and t <= prev_t:
                raise InputError(f"{info.path}: timestamps go backwards at t={t:.3f}s; re-encode the file")
            cuts.feed(frame)
            is_stored = abs(t - info.start_s) < 1e-9 or (
                prev_t is not None and slot(t, info.start_s, settings.fps) > slot(prev_t, info.start_s, settings.fps))
            prev_t = t
            inside = t >= a and (b is None or t < b)
            if inside:
                last_dt, last_t = (t - last_t if last_t is not None else last_dt), t
                n_in_unit += 1
                unreported += 1
                if unreported >= 30:
                    progress(unreported)
                    unreported = 0
            if not is_stored:
                continue
            if t < a:
                before = frame  # decoded frames are reference counted: keeping one is cheap
                continue
            if before is not None and detector is not None:
                sink.before(_resize(before, size))
            before = None
            if inside:
                sink.push(_Stored(t, n_in_unit - 1, _resize(frame, size)))
            elif not after_done:
                sink.after(_resize(frame, size) if detector is not None else None)
                after_done = True
        if not after_done:
            sink.after(None)
    except BaseException:
        sink.abort()
        raise
    sink.close()
    progress(unreported)
    cut_list = [c for c in cuts.finish() if c >= a and (b is None or c < b)]
    if b is None:
        _check_complete(info, last_t, a)
    writer.finish(n_decoded=n_in_unit, cuts=cut_list, last_t=last_t, last_dt=last_dt or 1.0 / info.fps)


def _resize(frame: av.VideoFrame, size: tuple[int, int]) -> np.ndarray:
    return frame.reformat(*size, format="bgr24", interpolation="AREA").to_ndarray()


def _check_complete(info: VideoInfo, last_t: float | None, a: float) -> None:
    """The last unit must reach the declared end: a shorter stream means a truncated file."""
    end = info.start_s + info.duration_s
    got = a if last_t is None else last_t
    if info.duration_s > 0 and got < end - max(1.0, 0.02 * info.duration_s):
        raise InputError(f"{info.path}: video data stops at {got:.1f}s of a declared {end:.1f}s; "
                         "the file is truncated: download it again")
