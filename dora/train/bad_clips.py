"""Unreadable clips during training: counted, logged once each in the run folder, and a run that
sees too many of them stopped (outside the training step, like DINO's data handling)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from pipeline.errors import TrainingDiverged

SLACK = 5  # unreadable clips tolerated on top of the fraction (a few early ones must not stop a run)


@dataclass
class BadClips:
    """Running count of unreadable clips (replaced by readable ones in the batch) against clips seen."""

    run: Path
    rank: int
    max_fraction: float
    bad: int = 0
    seen: int = 0
    log_name: str = field(init=False)

    def __post_init__(self) -> None:
        self.log_name = f"bad_clips.rank{self.rank}.log"

    def add(self, step: int, n_clips: int, n_bad: int, errors: list[str]) -> None:
        """Count one batch; its errors go to RUN/bad_clips.rankR.log. Raises TrainingDiverged when more
        than max_fraction of the clips seen so far (plus SLACK) were unreadable."""
        self.bad += n_bad
        self.seen += n_clips
        if errors:
            self.run.mkdir(parents=True, exist_ok=True)
            with open(self.run / self.log_name, "a") as f:
                f.writelines(f"step {step}: {e}\n" for e in errors)
        if self.bad > self.max_fraction * self.seen + SLACK:
            raise TrainingDiverged(f"{self.bad} of {self.seen} clips were unreadable (over train.max_bad_fraction="
                                   f"{self.max_fraction}), e.g. {errors[:1]}; run `dora-data verify`")
