"""One work unit: decode a time segment once and derive cuts, face-blurred JPEG frames and metadata.

Source frames in [start_s - margin, end_s + margin) are decoded; all of them feed the cut
detector at low resolution, only cuts inside [start_s, end_s) are kept. Stored frames form a
complete grid: slot k (time video_start + k/fps, `settings.slot_time`) stores the frame on screen
at that time, the latest frame with t <= slot time. A frame held on screen for several slots
(variable frame rate, "repeat previous frame" entries) fills each of them; the choice depends only
on frame times, not on where units begin. A unit owns the slots whose time lies in
[start_s, end_s). Faces found on a stored frame are also hidden on the stored frames before and
after it; the neighbours across the unit's borders are decoded (in the margins) for that purpose.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import av
import cv2
import numpy as np

from pipeline.errors import InputError
from pipeline.shard.cuts import CutTracker
from pipeline.shard.faces import FaceDetector, anonymize
from pipeline.shard.settings import ShardSettings
from pipeline.shard.units import Unit, UnitWriter
from pipeline.video import VideoInfo, first_slot, iter_frames, slot_time, stored_size

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
    """Detects faces on `detect_threads` threads; hides them and JPEG-encodes stored frames on one
    thread, in order.

    Decoding (main thread) overlaps with CenterFace and JPEG work. Detection is a pure function of
    a frame, so several frames are searched at once (one onnxruntime thread each: a unit that runs
    alone uses every core). Finishing tasks run in submission order on a single thread, so frame j
    is finished after the faces of frame j+1 are known (the +-1 carry-over) and results are written
    in time order: the output does not depend on timing or on the number of threads.
    """

    MAX_QUEUED = 8  # bounds memory when decoding runs ahead of detection

    def __init__(self, detector: FaceDetector | None, settings: ShardSettings, write: Callable,
                 detect_threads: int = 1):
        self.detector, self.settings, self.write = detector, settings, write
        self.pool = ThreadPoolExecutor(1)
        self.detectors = ThreadPoolExecutor(max(1, detect_threads)) if detector is not None else None
        self.queue: deque[Future] = deque()
        self.prev: Future | None = None  # faces of the stored frame before the pending one
        self.pending: tuple[_Stored, Future] | None = None
        self.last: tuple[int, Future] | None = None  # (source frame, its faces) of the last detection
        self.params = [cv2.IMWRITE_JPEG_QUALITY, settings.quality]

    def _submit(self, fn, *args, pool: ThreadPoolExecutor | None = None) -> Future:
        while len(self.queue) >= self.MAX_QUEUED:
            self.queue.popleft().result()
        fut = (pool or self.pool).submit(fn, *args)
        self.queue.append(fut)
        return fut

    def _detect(self, bgr: np.ndarray, key: int | None = None) -> Future:
        """Faces of `bgr`; a held frame (same source frame `key` as the last call) is not detected twice."""
        if key is not None and self.last is not None and self.last[0] == key:
            return self.last[1]
        fut = self._submit(self.detector.detect, bgr.copy() if key is not None else bgr, pool=self.detectors)
        self.last = (key, fut) if key is not None else None
        return fut

    def before(self, bgr: np.ndarray, key: int) -> None:
        """The last stored frame before the unit: only its faces are needed."""
        self.prev = self._detect(bgr, key) if self.detector is not None else None

    def push(self, frame: _Stored, key: int) -> None:
        """A stored frame of the unit; `key` names its source frame (a held frame is searched once)."""
        if self.detector is None:
            self._submit(self._finish, frame, None, None, None)
            return
        faces = self._detect(frame.bgr, key)
        self._close_pending(faces)
        self.pending = (frame, faces)

    def after(self, bgr: np.ndarray | None, key: int | None = None) -> None:
        """The first stored frame after the unit (None at the end of the video)."""
        if self.detector is not None:
            self._close_pending(self._detect(bgr, key) if bgr is not None else None)

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
            self.abort()

    def abort(self) -> None:
        for pool in (self.pool, self.detectors):
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)


def process_unit(unit: Unit, info: VideoInfo, settings: ShardSettings, writer: UnitWriter,
                 progress: Callable[[int], None] = lambda n: None, threads: int = 0) -> None:
    """Decode `unit`'s time range once and write its frames and cuts through `writer`."""
    a, b = unit.start_s, unit.end_s
    fps, t0 = settings.fps, info.start_s
    decode_from = max(t0, a - settings.margin_s)
    size = stored_size(info.width, info.height, settings.short_side)
    cuts = CutTracker(settings.cuts, info.width, info.height, info.fps, info.time_base)
    detector = _face_detector(settings) if settings.blur_faces else None
    sink = _FrameSink(detector, settings, writer.add_frame, detect_threads=threads or os.cpu_count() or 1)
    ka = first_slot(a, t0, fps)  # first slot of the unit; kb: first slot after it
    kb = None if b is None else first_slot(b, t0, fps)
    grid = _Grid(sink, ka, kb, t0, fps, size, detector is not None)
    n_in_unit = 0
    last_t, last_dt = None, 0.0
    unreported = n_after = 0
    try:
        for t, frame in iter_frames(info.path, decode_from, None if b is None else b + settings.margin_s,
                                    threads=threads, on_screen_at_start=True, device=settings.decode_device):
            if t >= decode_from:  # the frame on screen at decode_from is not a cut-detector input
                cuts.feed(frame)
            inside = t >= a and (b is None or t < b)
            if inside:
                last_dt, last_t = (t - last_t if last_t is not None else last_dt), t
                n_in_unit += 1
                unreported += 1
                if unreported >= 30:
                    progress(unreported)
                    unreported = 0
            n_after += b is not None and t >= b
            grid.frame(t, frame, n_in_unit + n_after - 1 if t >= a else -1)
        if b is None:
            _check_complete(info, last_t, a)
            if last_t is not None:  # the last frame stays on screen to the declared end
                last_dt = max(last_dt or 1.0 / info.fps, t0 + info.duration_s - last_t)
        grid.close((last_t or a) + (last_dt or 1.0 / info.fps))
    except BaseException:
        sink.abort()
        raise
    sink.close()
    progress(unreported)
    cut_list = [c for c in cuts.finish() if c >= a and (b is None or c < b)]
    writer.finish(n_decoded=n_in_unit, cuts=cut_list, last_t=last_t, last_dt=last_dt or 1.0 / info.fps)


class _Grid:
    """Turns decoded frames into one stored frame per slot: the frame on screen at the slot's time."""

    def __init__(self, sink: _FrameSink, ka: int, kb: int | None, t0: float, fps: float,
                 size: tuple[int, int], faces: bool):
        self.sink, self.ka, self.kb, self.t0, self.fps, self.size, self.faces = sink, ka, kb, t0, fps, size, faces
        self.next = max(ka - 1, 0)  # next slot to fill (the one before the unit: its faces)
        self.cur: tuple[float, av.VideoFrame, int] | None = None  # latest frame: (t, frame, local index)
        self.seq = -1  # decode count: tells frames apart (every frame before the unit has local index -1)
        self.bgr: tuple[int, np.ndarray] | None = None  # resized pixels of `cur`
        self.done = False

    def frame(self, t: float, frame: av.VideoFrame, local: int) -> None:
        """A new decoded frame at t: every slot before first_slot(t) shows the previous frame."""
        self._fill_until(first_slot(t, self.t0, self.fps))
        self.cur, self.bgr = (t, frame, local), None
        self.seq += 1

    def close(self, end: float) -> None:
        """End of decoding: the last frame stays on screen until `end` (or the unit's end)."""
        self._fill_until(first_slot(end, self.t0, self.fps) if self.kb is None else self.kb + 1)
        if not self.done:
            self.sink.after(None)

    def _pixels(self) -> np.ndarray:
        if self.bgr is None:
            self.bgr = (self.cur[2], _resize(self.cur[1], self.size))
        return self.bgr[1]

    def _fill_until(self, k_stop: int) -> None:
        while self.cur is not None and not self.done and self.next < k_stop:
            k, local = self.next, self.cur[2]
            if k < self.ka:
                if self.faces:
                    self.sink.before(self._pixels(), self.seq)
            elif self.kb is None or k < self.kb:
                self.sink.push(_Stored(slot_time(k, self.t0, self.fps), local, self._pixels().copy()), self.seq)
            else:
                self.sink.after(self._pixels() if self.faces else None, self.seq)
                self.done = True
            self.next += 1


def _resize(frame: av.VideoFrame, size: tuple[int, int]) -> np.ndarray:
    return frame.reformat(*size, format="bgr24", interpolation="AREA").to_ndarray()


def _check_complete(info: VideoInfo, last_t: float | None, a: float) -> None:
    """The last unit must reach the declared end: a shorter stream means a truncated file."""
    end = info.start_s + info.duration_s
    got = a if last_t is None else last_t
    if info.duration_s > 0 and got < end - max(1.0, 0.02 * info.duration_s):
        raise InputError(f"{info.path}: video data stops at {got:.1f}s of a declared {end:.1f}s; "
                         "the file is truncated: download it again")
