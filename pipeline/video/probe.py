"""Open a video once, cheaply, and say what it is or exactly why it cannot be used."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from fractions import Fraction

import av

from pipeline.errors import InputError

STILL_IMAGE_FORMATS = {"image2", "image2pipe"}  # ffmpeg's image demuxers, besides every `*_pipe` one
REENCODE_HINT = "re-encode it, e.g. `ffmpeg -i IN -c:v libx264 -crf 18 OUT.mp4`"


@dataclass(frozen=True)
class VideoInfo:
    """Facts about the first video stream of a file, read from its header and two decoded frames."""

    path: str
    codec: str
    width: int
    height: int
    fps: float  # average frame rate as declared by the container
    time_base_num: int
    time_base_den: int
    start_s: float  # presentation time of the first frame, in the stream's clock
    duration_s: float  # end of the last frame minus start_s, as declared
    n_frames_declared: int  # 0 where the container does not say

    @property
    def time_base(self) -> Fraction:
        return Fraction(self.time_base_num, self.time_base_den)

    def to_json(self) -> dict:
        return asdict(self)


def _open(path: str) -> av.container.InputContainer:
    if not os.path.exists(path):
        raise InputError(f"{path}: no such file; check the path (or run `dora-data fetch` first)")
    if os.path.isdir(path):
        raise InputError(f"{path}: is a folder without a video in it; give a video file or a fetch folder")
    if os.path.getsize(path) == 0:
        raise InputError(f"{path}: file is empty (0 bytes); download it again")
    try:
        return av.open(path, metadata_errors="ignore")
    except av.error.FFmpegError as e:
        raise InputError(
            f"{path}: not a readable video ({e.strerror or type(e).__name__}); "
            "the file is corrupt, truncated or not a video: download it again"
        ) from None


def _refuse_still_image(container: av.container.InputContainer, path: str) -> None:
    """ffmpeg opens a JPEG or PNG (whatever its name) as a one-frame "video": refuse it in one line."""
    fmt = container.format.name
    if fmt.endswith("_pipe") or fmt in STILL_IMAGE_FORMATS:
        kind = fmt.removesuffix("_pipe").upper() if fmt.endswith("_pipe") else "still"
        container.close()
        raise InputError(f"{path}: is a {kind} image, not a video (one still picture, whatever its name says); "
                         "give a video file")


def open_video_stream(path: str) -> tuple[av.container.InputContainer, av.video.stream.VideoStream]:
    """Open `path` and return its container and first video stream, or raise InputError."""
    container = _open(path)
    _refuse_still_image(container, path)
    if not container.streams.video:
        container.close()
        raise InputError(f"{path}: has no video stream (audio or data only); give a video file")
    stream = container.streams.video[0]
    if stream.codec_context is None:
        tag = stream.codec_tag if hasattr(stream, "codec_tag") else "?"
        container.close()
        raise InputError(f"{path}: video codec (tag {tag!r}) is not supported by this ffmpeg; {REENCODE_HINT}")
    return container, stream


def _first_frame(container, stream, path: str) -> av.VideoFrame:
    try:
        for frame in container.decode(stream):
            return frame
    except av.error.FFmpegError as e:
        raise InputError(f"{path}: video data cannot be decoded ({e.strerror}); the file is corrupt: "
                         "download it again") from None
    raise InputError(f"{path}: video stream holds no frames; the file is truncated or empty: download it again")


def probe(path: str) -> VideoInfo:
    """Read the header, decode the first frame and one frame near the declared end.

    The tail check catches files cut short (a partial download) before hours of work start.
    """
    container, stream = open_video_stream(path)
    try:
        tb = stream.time_base
        first = _first_frame(container, stream, path)
        if first.pts is None:
            raise InputError(f"{path}: frames carry no timestamps; {REENCODE_HINT}")
        start_s = float(first.pts * tb)
        fps = float(stream.average_rate or stream.guessed_rate or 0)
        if fps <= 0:
            raise InputError(f"{path}: frame rate unknown; {REENCODE_HINT}")
        if stream.duration:
            end_s = float((stream.start_time or 0) * tb + stream.duration * tb)
        elif container.duration:
            end_s = (container.start_time or 0) / 1e6 + container.duration / 1e6
        else:
            end_s = 0.0
        duration_s = max(end_s - start_s, 0.0)
        if duration_s > 4.0:
            _check_tail(container, stream, path, start_s + duration_s)
        return VideoInfo(
            path=os.path.abspath(path), codec=stream.codec_context.name,
            width=stream.codec_context.width, height=stream.codec_context.height, fps=fps,
            time_base_num=tb.numerator, time_base_den=tb.denominator, start_s=start_s,
            duration_s=duration_s, n_frames_declared=int(stream.frames or 0),
        )
    finally:
        container.close()


def _check_tail(container, stream, path: str, end_s: float) -> None:
    """Decode around end_s - 2 s; a file whose data stops early fails here."""
    target = end_s - 2.0
    try:
        container.seek(int(target / stream.time_base), stream=stream, backward=True)
        for frame in container.decode(stream):
            if frame.pts is not None and float(frame.pts * stream.time_base) >= target - 1.0:
                return
    except av.error.FFmpegError:
        pass
    raise InputError(f"{path}: data ends before the declared duration ({end_s:.1f} s); the file is truncated: "
                     "download it again")
