"""What a rank's stream of training clips needs besides the `data` config section."""

from __future__ import annotations

from dataclasses import dataclass

from dora.config import Config


@dataclass(frozen=True)
class ClipStream:
    """Batches of `batch_size` clips per rank, augmentations seeded by `seed`, `global_views` global
    views per frame (2 in the paper, 1 in the official code), epochs counted in `epoch_unit`."""

    batch_size: int
    seed: int
    global_views: int
    epoch_unit: str = "source_frames"

    @classmethod
    def from_config(cls, cfg: Config) -> ClipStream:
        """The stream of a run: train.batch_size, train.seed, dora.global_views, train.epoch_unit."""
        return cls(cfg.train.batch_size, cfg.train.seed, cfg.dora.global_views, cfg.train.epoch_unit)
