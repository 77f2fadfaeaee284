"""Reading videos: probing, the one decoding pass, named sources, the stored-frame time grid, sample clips."""

from pipeline.video.decode import iter_frames
from pipeline.video.hwaccel import (
    DECODE_DEVICES,
    NO_DEVICE,
    cuda_decode_problem,
    cuda_device_count,
    gpu_index,
    note,
    resolve_decode_device,
)
from pipeline.video.probe import VideoInfo, probe
from pipeline.video.samples import sample_video
from pipeline.video.slots import first_slot, slot, slot_time, stored_size
from pipeline.video.sources import NAME_RE, VIDEO_EXTS, Source, resolve_inputs, sha256_file, sha256_of, video_name

__all__ = [
    "iter_frames", "DECODE_DEVICES", "NO_DEVICE", "cuda_decode_problem", "cuda_device_count", "gpu_index", "note",
    "resolve_decode_device", "VideoInfo", "probe", "sample_video", "first_slot", "slot", "slot_time", "stored_size",
    "NAME_RE", "Source", "VIDEO_EXTS", "resolve_inputs", "sha256_file", "sha256_of", "video_name",
]
