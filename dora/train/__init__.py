"""The training loop of `dora-train`: trainer, schedules and optimisers, run plan, monitor, pictures."""

from dora.train.loop import Trainer
from dora.train.viz import tracking_sheet

__all__ = ["Trainer", "tracking_sheet"]
