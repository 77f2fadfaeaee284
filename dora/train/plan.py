"""What a run costs, printed when `dora-train` starts: clips and steps per epoch, total steps, time.

One epoch is `BatchSource.clips_per_epoch()` clips per rank (train.epoch_unit); the warm-up, the
frozen last layer and the cosine schedules all count in the same steps (`schedules.total_steps`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

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


CPU_CONFIGS = "--config cpu_proxy (a CPU run that learns, ~10 min) or --config smoke (plumbing only)"


def probe_clip_seconds(student: torch.nn.Module, teacher: torch.nn.Module, cfg, repeats: int = 2) -> float:
    """A lower bound on the seconds one clip costs in a training step on this device, measured: the
    student's forward+backward on one global and one local crop and the teacher's forward on one global,
    scaled to a clip's T x (V global + L local) crops (tracking, Sinkhorn and the head are not counted).
    The random state and the weights' gradients are left as they were."""
    d = cfg.data
    views = cfg.dora.global_views
    device = next(student.parameters()).device

    def timed(fn) -> float:
        fn()  # warm-up
        t0 = time.perf_counter()
        for _ in range(repeats):
            fn()
        return (time.perf_counter() - t0) / repeats

    def student_pass(size: int) -> Callable[[], None]:
        def run() -> None:
            out = student(torch.randn(1, 3, size, size, device=device))
            out.float().sum().backward()
        return run

    def teacher_pass() -> None:
        with torch.no_grad():
            teacher(torch.randn(1, 3, d.global_size, d.global_size, device=device))

    with torch.random.fork_rng(devices=[]):
        g, loc, t = timed(student_pass(d.global_size)), timed(student_pass(d.local_size)), timed(teacher_pass)
    for p in student.parameters():
        p.grad = None
    return d.clip_frames * (views * (g + t) + d.local_crops * loc)


def cpu_notice(plan: RunPlan, clip_seconds: float, precision: str = "fp32") -> str:
    """What `dora-train` says when no GPU is found: the run's real time on this CPU, and the CPU configs."""
    fp32 = "" if precision == "fp32" else f"; train.precision={precision} applies on a GPU, the CPU computes in fp32"
    return (f"no GPU found: training runs on the CPU, where one clip of this config takes at least "
            f"{clip_seconds:.2g} s (measured), so one step of {plan.batch_size} clips takes at least "
            f"{duration(plan.batch_size * clip_seconds)} and the whole run at least "
            f"{duration(plan.total_steps * plan.batch_size * clip_seconds)} (the GPU estimate above does not "
            f"apply); for CPU runs use {CPU_CONFIGS}{fp32}")


def step_bytes(cfg, backbone: torch.nn.Module) -> int:
    """Estimated bytes one training step holds on the CPU (fp32): the student's saved activations for
    B x T x (V global + L local) crops, per block 2·s·h·(34 + 5·a·s/h) bytes for s tokens of width h
    and a heads (Korthikanti et al. 2022's count for 16-bit activations, doubled for fp32), plus the
    student's weights, gradients and AdamW state and the teacher's weights. The head, tracking and
    Sinkhorn are not counted: a lower bound (31 GB for configs/dora_vits16.yaml, which the kernel killed at 22 GB)."""
    d, h = cfg.data, int(backbone.embed_dim)
    a, depth = int(backbone.blocks[-1].attn.num_heads), len(backbone.blocks)
    patch = int(backbone.patch_embed.patch_size[0])

    def image(size: int) -> float:
        s = (size // patch) ** 2 + 1
        return depth * 2 * s * h * (34 + 5 * a * s / h)

    crops = cfg.dora.global_views * image(d.global_size) + d.local_crops * image(d.local_size)
    weights = sum(p.numel() for p in backbone.parameters()) * 4
    return int(cfg.train.batch_size * d.clip_frames * crops + 5 * weights)


def available_bytes() -> int | None:
    """Memory this process may still use: MemAvailable, capped by a cgroup (v2 or v1) memory limit."""
    found = []
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                found.append(int(line.split()[1]) * 1024)
    except OSError:
        pass
    v1 = "/sys/fs/cgroup/memory/memory."
    for limit, usage in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                         (v1 + "limit_in_bytes", v1 + "usage_in_bytes")):
        try:
            lim = Path(limit).read_text().strip()
            if lim != "max" and int(lim) < 1 << 60:
                found.append(int(lim) - int(Path(usage).read_text().strip()))
        except (OSError, ValueError):
            continue
    return min(found) if found else None


def check_memory(cfg, backbone: torch.nn.Module) -> None:
    """Refuse, in one line, a CPU run whose step needs more memory than is available (train.memory_check)."""
    from pipeline.errors import InputError

    need, have = step_bytes(cfg, backbone), available_bytes()
    if have is not None and need > have:
        raise InputError(f"one training step of this config needs at least {need / 2**30:.1f} GB of memory on the "
                         f"CPU, and {have / 2**30:.1f} GB are available (pid {os.getpid()}); lower "
                         f"train.batch_size (now {cfg.train.batch_size}) or data.clip_frames, use a GPU, or use "
                         f"{CPU_CONFIGS} (train.memory_check=false runs anyway)")
