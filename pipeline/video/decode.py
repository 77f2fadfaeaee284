"""The single decoding pass: frames of one time range, in presentation order, with exact timestamps."""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Iterable, Iterator

import av

from pipeline.errors import InputError
from pipeline.video.hwaccel import open_on_device
from pipeline.video.probe import REENCODE_HINT

REORDER_WINDOW = 8  # frames: how far a timestamp may sit from its frame in output order (memory: 8 frames)


def iter_frames(path: str, start_s: float, end_s: float | None, threads: int = 0,
                on_screen_at_start: bool = False, device: str = "cpu") -> Iterator[tuple[float, av.VideoFrame]]:
    """Yield (t, frame) for every decoded frame with start_s <= t < end_s (end_s None: to the end).

    With `on_screen_at_start`, the latest frame with t < start_s (the one on screen at start_s, a held
    frame) is yielded first when there is one; it lies between the key frame the seek lands on and start_s.

    t is the frame's presentation timestamp in seconds (pts * time_base), the one clock of the
    project, placed as players place it (`placed_in_time`): when a container labels frames out of
    order, the decoder's output order is kept and the labels are handed out in sorted order. The
    decoder seeks to the key frame at or before start_s and decodes forward; when the container
    seeks imprecisely and lands after start_s, it seeks again further back. `device` 'cuda' decodes with
    NVDEC and yields the frames in system memory, in the software decoder's pixel format (`hwaccel`).
    """
    container, stream, soft = open_on_device(path, device)
    stream.thread_type = "AUTO"
    stream.thread_count = threads
    tb = stream.time_base
    try:
        back = 0.0
        while True:
            target = start_s - back
            if target > 0 or back > 0:
                container.seek(max(int(target / tb), 0), stream=stream, backward=True)
            frames = container.decode(stream)
            first = next(frames, None)
            if first is None:
                return
            landed_late = first.pts is not None and float(first.pts * tb) > start_s + 1e-6
            if landed_late and target > 0:
                back = max(2 * back, 5.0)  # imprecise seek: try again further back
                continue
            break
        held: tuple[float, av.VideoFrame] | None = None
        for frame in placed_in_time(_chain(first, frames), path, tb):
            t = float(frame.pts * tb)
            if t < start_s:
                held = (t, frame) if on_screen_at_start else None
                continue
            if held is not None:
                yield held[0], soft(held[1])
                held = None
            if end_s is not None and t >= end_s:
                return
            yield t, soft(frame)
        if held is not None:
            yield held[0], soft(held[1])
    except av.error.FFmpegError as e:
        if device == "cuda":
            raise InputError(f"{path}: NVDEC decoding failed after t={start_s:.1f}s ({e.strerror}): a stream NVDEC "
                             "cannot decode (4:2:2, over its size limits) or damaged data; rerun with "
                             "--decode-device cpu") from None
        raise InputError(f"{path}: corrupt video data after t={start_s:.1f}s ({e.strerror}); "
                         "the file is damaged or truncated: download it again") from None
    finally:
        container.close()


def _chain(first, rest):
    yield first
    yield from rest


def placed_in_time(frames: Iterable[av.VideoFrame], path: str, tb, window: int = REORDER_WINDOW
                   ) -> Iterator[av.VideoFrame]:
    """Frames in decoder output order, each given the smallest timestamp not yet handed out.

    Decoders output frames in display order, but some containers label them out of order (AVI with
    packed B-frames: pts 1, 2, 3, 5, 4, 6, ...). Among the next `window` frames, the n-th output frame
    gets the n-th smallest label, so a label permutation local to `window` frames is undone and a
    well-ordered stream is unchanged. A label that lands more than `window` frames from the frame that
    carried it, or a repeated label, means frames cannot be placed in time: InputError, naming the spot.
    """
    pending: deque[av.VideoFrame] = deque()
    labels: list[tuple[int, int]] = []  # (pts, position in output order of the frame that carried it)
    last: int | None = None
    n = 0

    def emit() -> av.VideoFrame:
        nonlocal last, n
        frame, (pts, came) = pending.popleft(), heapq.heappop(labels)
        if abs(came - n) > window or (last is not None and pts <= last):
            raise InputError(
                f"{path}: the frame labelled t={float(pts * tb):.3f}s comes {came - n:+d} frames from its place "
                f"in display order (repeated or beyond a {window}-frame reorder window): the frames cannot be "
                f"placed in time; {REENCODE_HINT}")
        frame.pts, last = pts, pts
        n += 1
        return frame

    for k, frame in enumerate(frames):
        if frame.pts is None:
            raise InputError(f"{path}: a frame has no timestamp; {REENCODE_HINT}")
        pending.append(frame)
        heapq.heappush(labels, (frame.pts, k))
        if len(pending) > window:
            yield emit()
    while pending:
        yield emit()
