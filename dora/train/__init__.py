"""The training loop of `dora-train`: trainer, schedules and optimisers, run plan, monitor, pictures."""

from dora.train.loop import Trainer
from dora.train.viz import teacher_frames, tracking_sheet

__all__ = ["Trainer", "teacher_frames", "tracking_sheet"]
