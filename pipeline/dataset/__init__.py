"""The read side of a shard folder: `Dataset`, the clip sampling contract, `verify`, previews."""

from pipeline.dataset.clips import Clip, ClipSampler, ClipSpec
from pipeline.dataset.health import clipless_videos, dataset_warnings, fps_warning
from pipeline.dataset.preview import clip_grid
from pipeline.dataset.reader import Dataset
from pipeline.dataset.verify import verify

__all__ = ["Clip", "ClipSampler", "ClipSpec", "clip_grid", "Dataset", "verify", "clipless_videos",
           "dataset_warnings", "fps_warning"]
