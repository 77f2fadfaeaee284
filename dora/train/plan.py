"""What a run costs, printed when `dora-train` starts: clips and steps per epoch, total steps, time.

One epoch is `BatchSource.clips_per_epoch()` clips per rank (train.epoch_unit); the warm-up, the
frozen last layer and the cosine schedules all count in the same steps (`schedules.total_steps`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

ASSUMED_RATE = 100.0  # clips/s per GPU before anything is measured (DESIGN.md: H200 ceiling ~140)
MEASURE_STEPS = 10  # steps timed (after the first) for the measured estimate


def duration(seconds: float) -> str:
    """A human duration: 45 s, 12 min, 3.4 h, 5.1 d."""
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 3 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


@dataclass(frozen=True)
class RunPlan:
    epochs: float
    unit: str  # train.epoch_unit
    clips_per_epoch: int  # all ranks together
    steps_per_epoch: int
    total_steps: int
    batch_size: int  # clips per GPU and step
    world: int

    @property
    def total_clips(self) -> int:
        return self.total_steps * self.batch_size * self.world

    def seconds(self, clips_per_s_per_gpu: float, steps: int | None = None) -> float:
        """Wall time of `steps` steps (default: the whole run) at a rate per GPU."""
        steps = self.total_steps if steps is None else steps
        return steps * self.batch_size / max(clips_per_s_per_gpu, 1e-9)

    def describe(self) -> str:
        return (f"plan: {self.clips_per_epoch:,} clips/epoch ({self.unit}) = {self.steps_per_epoch:,} steps/epoch of "
                f"{self.batch_size} x {self.world} clips; {self.epochs:g} epochs = {self.total_steps:,} steps "
                f"({self.total_clips:,} clips); at an assumed {ASSUMED_RATE:g} clips/s/GPU: "
                f"{duration(self.seconds(ASSUMED_RATE))}")

    def measured(self, clips_per_s_per_gpu: float, done: int) -> str:
        return (f"measured {clips_per_s_per_gpu:.1f} clips/s/GPU: the whole run takes "
                f"{duration(self.seconds(clips_per_s_per_gpu))}, "
                f"{duration(self.seconds(clips_per_s_per_gpu, self.total_steps - done))} from step {done:,}")


class StepTimer:
    """Times MEASURE_STEPS steps after the first (warm-up) step of a session, then says the measured
    estimate of the whole run once."""

    def __init__(self, plan: RunPlan, batch_size: int, total: int, say: Callable[[str], None]):
        self.plan, self.batch_size, self.total, self.say = plan, batch_size, total, say
        self.start: tuple[int, float] | None = None
        self.done = False

    def tick(self, step: int) -> None:
        """Call after each step (`step` steps complete)."""
        now = time.perf_counter()
        if self.start is None:
            self.start = (step, now)
            return
        first, t0 = self.start
        if not self.done and (step - first >= MEASURE_STEPS or step == self.total) and step > first:
            self.say(self.plan.measured((step - first) * self.batch_size / max(now - t0, 1e-9), step))
            self.done = True
