"""Where `dora-data shard` decodes (`--decode-device cpu|cuda|auto`), and which CUDA device a process uses.

cuda: NVDEC through PyAV's hardware acceleration (FFmpeg's own decoders with the cuda hwaccel, no
software fallback). Each decoded frame is downloaded to system memory and laid out in the pixel format
the software decoder gives (nv12 -> yuv420p or yuvj420p, p010 -> yuv420p10: a lossless re-layout), so
the resize / cut-detector / JPEG path and its bytes stay those of the CPU path, timestamps included
(the decoder's own pts, handed out by the same `placed_in_time`). A stream of a codec without NVDEC
support in FFmpeg is decoded on the CPU. NVDEC is expected to give the same pixels as FFmpeg's software
decoders for conformant H.264 / HEVC / VP9 streams: bench/shard_gpu.py checks it, nothing assumes it.

LOCAL_RANK (torchrun), else SLURM_LOCALID (srun), picks the CUDA device of the GPU steps (decoding and
CenterFace), modulo the devices visible (a launcher that gives each task its own GPU leaves one visible).
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable

import av
import numpy as np

from pipeline.errors import InputError

DECODE_DEVICES = ("cpu", "cuda", "auto")
NO_DEVICE = "no CUDA device is visible: no NVIDIA driver, or CUDA_VISIBLE_DEVICES hides them"
# The software decoder's format for each format NVDEC downloads in (as PyAV's frames name them).
SOFTWARE_OF = {"nv12": ("yuv420p", "yuvj420p"), "p010le": ("yuv420p10le",), "p012le": ("yuv420p12le",),
               "p016le": ("yuv420p10le", "yuv420p12le", "yuv420p16le"), "yuv444p": ("yuvj444p",),
               "yuv444p16le": ("yuv444p10le", "yuv444p12le", "yuv444p16le")}


def note(text: str) -> None:
    """One `note:` line on stdout, with the run's other information (a choice made for the user, said once
    before any work); stderr keeps errors and warnings."""
    print(f"note: {text}", flush=True)


def cuda_device_count() -> int:
    """CUDA devices the driver shows this process (CUDA_VISIBLE_DEVICES applies); 0 without a driver."""
    try:
        cuda = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return 0
    n = ctypes.c_int(0)
    if cuda.cuInit(0) != 0 or cuda.cuDeviceGetCount(ctypes.byref(n)) != 0:
        return 0
    return n.value


def gpu_index(rank: int = 0, n_devices: int | None = None) -> int:
    """The CUDA device of the process with local rank `rank` on its node (the launcher's LOCAL_RANK or
    SLURM_LOCALID, read by the caller): the rank modulo the visible devices (`n_devices`, default: counted)."""
    n = cuda_device_count() if n_devices is None else n_devices
    return rank % n if n > 0 else rank


def cuda_decode_problem(device: int) -> str | None:
    """Why NVDEC decoding through PyAV cannot run on CUDA device `device` here; None when it can.

    Asks PyAV's FFmpeg for its cuda device type, then opens the device for the H.264 decoder.
    """
    from av.codec.hwaccel import HWAccel, hwdevices_available

    if "cuda" not in hwdevices_available():
        return (f"PyAV {av.__version__}'s FFmpeg was built without cuda hardware decoding "
                f"(it has {', '.join(hwdevices_available()) or 'none'})")
    n = cuda_device_count()
    if n == 0:
        return NO_DEVICE
    try:
        HWAccel(device_type="cuda", device=str(device), allow_software_fallback=False).create(av.Codec("h264", "r"))
    except (av.error.FFmpegError, NotImplementedError) as e:
        return f"FFmpeg cannot open CUDA device {device} of {n} ({getattr(e, 'strerror', None) or e})"
    return None


def resolve_decode_device(wanted: str, rank: int = 0, say: Callable[[str], None] = note) -> str:
    """'cpu' or 'cuda': where decoding runs, decided once before any work. `cuda` that cannot run here is an
    InputError (one line: what is missing, what to do); `auto` is cuda where it can run, else cpu (said)."""
    if wanted == "cpu":
        return "cpu"
    device = gpu_index(rank)
    problem = cuda_decode_problem(device)
    if problem is None:
        if wanted == "auto":
            say(f"--decode-device auto: decoding with NVDEC on CUDA device {device}")
        return "cuda"
    if wanted == "cuda":
        raise InputError(f"--decode-device cuda: {problem}; use --decode-device cpu (or auto) here")
    say(f"--decode-device auto: decoding on the CPU, since {problem}")
    return "cpu"


def open_on_device(path: str, device: str) -> tuple[av.container.InputContainer, av.video.stream.VideoStream,
                                                   Callable[[av.VideoFrame], av.VideoFrame]]:
    """Open `path` for decoding on `device` ('cpu' or 'cuda'): (container, first video stream, `soft`), where
    `soft(frame)` gives a decoded frame in the software decoder's pixel format (the identity on the CPU)."""
    from pipeline.video.probe import open_video_stream

    container, stream = open_video_stream(path)
    if device != "cuda":
        return container, stream, _same
    software = stream.codec_context.format.name if stream.codec_context.format else None  # from the header
    container.close()
    from av.codec.hwaccel import HWAccel

    hw = HWAccel(device_type="cuda", device=str(gpu_index()), allow_software_fallback=False)
    try:
        container = av.open(path, metadata_errors="ignore", hwaccel=hw)
    except av.error.FFmpegError as e:
        raise InputError(f"{path}: NVDEC decoding cannot start ({e.strerror or e}); "
                         "rerun with --decode-device cpu") from None
    return container, container.streams.video[0], lambda frame: as_software(frame, software)


def _same(frame: av.VideoFrame) -> av.VideoFrame:
    return frame


def _samples(plane, rows: int, width: int, dtype: str) -> np.ndarray:
    """A plane's samples as a [rows, width] array (a view: writing it writes the frame)."""
    a = np.frombuffer(plane, dtype)
    return a.reshape(-1, plane.line_size // a.itemsize)[:rows, :width]


def as_software(frame: av.VideoFrame, software: str | None) -> av.VideoFrame:
    """`frame` (downloaded from the GPU) in the software decoder's format `software`: the same samples laid out
    anew with numpy (chroma de-interleaved, 16-bit containers shifted down to the format's depth), never
    resampled; timestamp and every frame property carried over. Already in that format: unchanged.

    swscale's own conversion is not trusted with the samples: its p010le -> yuv420p10le was seen to change
    chroma samples, differently from run to run.
    """
    have = frame.format.name
    if software is None or have == software:
        return frame
    if software not in SOFTWARE_OF.get(have, ()):
        raise InputError(f"NVDEC gave {have} frames where the software decoder gives {software}; "
                         "rerun with --decode-device cpu")
    # swscale makes the frame (it carries every property over, chroma siting included, which the scaler later
    # reads), then every sample is overwritten with the exact one
    full = "JPEG" if software.startswith("yuvj") else None
    out = frame.reformat(format=software, src_color_range=full, dst_color_range=full)
    dtype = "u1" if have in ("nv12", "yuv444p") else "<u2"
    shift = 0 if dtype == "u1" else 16 - int(software.removesuffix("le")[-2:])  # p010: 16 - 10 = 6
    src = list(frame.planes)
    dst = list(out.planes)
    for k, plane in enumerate(dst):
        rows, width = plane.height, plane.width
        if len(src) == 2 and k > 0:  # semi-planar source: U and V alternate in the second plane
            samples = _samples(src[1], rows, 2 * width, dtype)[:, k - 1::2]
        else:
            samples = _samples(src[k], rows, width, dtype)
        _samples(plane, rows, width, dtype)[:] = samples >> shift if shift else samples
    out.color_range = frame.color_range
    return out
