"""What a run shows: a progress bar (clips/s, data wait, ETA), metrics.jsonl, TensorBoard, tracking PNGs."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from tqdm import tqdm

from dora.data import render_host_batch
from dora.train.viz import teacher_frames, tracking_sheet
from pipeline.files import write_text_atomic


class Monitor:
    """Rank 0's view of a run. `start_step` steps are complete (the checkpoint's); records of later
    steps in metrics.jsonl (from a run killed after that checkpoint) are dropped, so every step is
    logged once. `fresh`: no checkpoint was resumed, so every earlier record (a step-0 evaluation of
    an attempt killed before its first checkpoint) is dropped too."""

    def __init__(self, run: Path, start_step: int, total_steps: int, clips_per_step: int, enabled: bool = True,
                 bar: bool = True, fresh: bool = False):
        self.run, self.enabled, self.clips_per_step = run, enabled, clips_per_step
        self.bar = tqdm(total=total_steps, initial=start_step, unit="step", dynamic_ncols=True,
                        disable=not (enabled and bar), desc="train")
        self.tb = None
        if not enabled:
            return
        run.mkdir(parents=True, exist_ok=True)
        self.metrics = run / "metrics.jsonl"
        if self.metrics.exists():
            kept = [line for line in self.metrics.read_text().splitlines()
                    if line.strip() and not fresh and json.loads(line)["step"] <= start_step]
            write_text_atomic(self.metrics, "".join(line + "\n" for line in kept))
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(run / "tb"), purge_step=0 if fresh else start_step + 1)
        except ImportError:
            self.tb = None

    def step(self, step: int, values: dict, step_s: float, data_s: float, log: bool) -> None:
        if not self.enabled:
            return
        rate = self.clips_per_step / max(step_s, 1e-9)
        wait = 100.0 * data_s / max(step_s, 1e-9)
        self.bar.update(1)
        self.bar.set_postfix(loss=f"{values['loss']:.4f}", clips_s=f"{rate:.1f}", data_wait=f"{wait:.0f}%")
        if not log:
            return
        record = {"step": step, **values, "clips_per_s": round(rate, 3), "data_wait_pct": round(wait, 1)}
        with open(self.metrics, "a") as f:
            f.write(json.dumps(record) + "\n")
        if self.tb is not None:
            for k, v in record.items():
                if k != "step" and isinstance(v, (int, float)):  # bools (the collapse flag) as 0/1
                    self.tb.add_scalar(f"train/{k}", float(v), step)

    def image(self, path: Path, step: int) -> None:
        if self.tb is not None and self.enabled:
            import numpy as np
            from PIL import Image

            self.tb.add_image("tracking", np.asarray(Image.open(path).convert("RGB")), step, dataformats="HWC")

    def close(self) -> None:
        self.bar.close()
        if self.tb is not None:
            self.tb.close()


class TrackingSheets:
    """The same clip drawn with the teacher's tracked objects as training goes on (like Figure 4): heads
    come from a generator seeded with the run's seed, so the pictures differ only by the weights."""

    def __init__(self, model, clip: torch.Tensor, folder: Path, seed: int, frames: list | None = None,
                 times: list[float] | None = None, video: str = ""):
        self.model, self.clip, self.folder, self.seed = model, clip, folder, seed
        self.frames, self.times, self.video = frames, times, video  # frames: the stored (un-augmented) ones

    @classmethod
    def of_batch(cls, model, hb, cfg, folder: Path, device) -> TrackingSheets:
        """The first clip of HostBatch `hb` whose frames decode, un-augmented (short side data.global_size,
        as `teacher_frames` makes it); view 0 of the augmented clip when none decodes."""
        for clip, jpegs in zip(hb.clips, hb.jpegs, strict=True):
            try:
                frames, x = teacher_frames(jpegs, cfg.data.global_size, model.patch)
            except OSError:
                continue
            times = list(clip.times) if len(frames) > 1 else None  # a one-frame clip: an image (DoRA*)
            return cls(model, x[None, :, None].to(device), folder, cfg.train.seed, frames, times,
                       Path(clip.video).name)
        views = render_host_batch(hb, cfg.data, cfg.dora.global_views)["globals"]
        return cls(model, views[:1, :, :1].to(device), folder, cfg.train.seed)

    @torch.no_grad()
    def draw(self, step: int, monitor: Monitor) -> None:
        gen = self.model.generator
        saved = gen.get_state()
        gen.manual_seed(self.seed)
        _, maps, _ = self.model.track_objects(self.clip)
        gen.set_state(saved)
        if maps is None:
            return
        clip, patch = self.clip, self.model.patch
        grid = (clip.shape[-2] // patch, clip.shape[-1] // patch)
        what = "augmented view 0" if self.frames is None else \
            f"the un-augmented {'frames' if len(self.frames) > 1 else 'image'} of {self.video}"
        path = tracking_sheet(clip[0, :, 0] if self.frames is None else self.frames, maps[0, :, 0], grid,
                              self.folder / f"step_{step:08d}.png",
                              f"step {step}: k={maps.shape[3]} tracked objects (teacher) on {what}, teacher input "
                              f"{clip.shape[-1]}x{clip.shape[-2]}", times=self.times)
        monitor.image(path, step)
