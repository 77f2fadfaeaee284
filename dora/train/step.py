"""One optimisation step of DoRA or DINO, as the body of DINO's `train_one_epoch`.

Kept apart from the trainer (data, checkpoints, logging) so that the step itself can be driven with
given tensors: `bench/parity_official.py` runs it beside the official DoRA and DINO trainers.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from dora.config import Config
from dora.model import DoRA
from dora.train.distributed import all_finite
from dora.train.schedules import StepValues, cancel_last_layer_grads, clip_gradients, set_lr_wd, step_values
from pipeline.errors import TrainingDiverged


@dataclass
class StepResult:
    """What one step produced: the method's outputs (loss, its parts, teacher/student outputs, maps),
    the scheduled values it ran with, and the gradient norm before clipping."""

    out: dict
    values: StepValues
    grad_norm: float


class TrainStep:
    """schedules -> forward (eq. 10) -> finite check -> backward -> clip -> frozen last layer -> optimiser
    -> teacher EMA. `scaler` is a GradScaler for fp16; `autocast` the dtype of mixed precision (None: fp32)."""

    def __init__(self, model: DoRA, opt: torch.optim.Optimizer, cfg: Config, iters_per_epoch: int,
                 global_batch: int, device_type: str = "cpu", autocast: torch.dtype | None = None,
                 scaler: torch.amp.GradScaler | None = None):
        self.model, self.opt, self.cfg, self.scaler = model, opt, cfg, scaler
        self.iters_per_epoch, self.global_batch = iters_per_epoch, global_batch
        self.device_type, self.autocast = device_type, autocast

    def schedule(self, step: int) -> StepValues:
        c = self.cfg
        return step_values(c.optim, c.loss, c.train.epochs, step, self.iters_per_epoch, self.global_batch)

    def __call__(self, step: int, globals_: torch.Tensor, locals_: torch.Tensor) -> StepResult:
        cfg = self.cfg
        sv = self.schedule(step)
        set_lr_wd(self.opt, sv.lr, sv.weight_decay)
        amp = (torch.autocast(self.device_type, dtype=self.autocast) if self.autocast is not None
               else contextlib.nullcontext())
        with amp:
            out = self.model(globals_, locals_, sv.teacher_temp, step=step)
        loss = out["loss"]
        if not all_finite(loss):
            raise TrainingDiverged(f"loss is {loss.item()} at step {step}; stopped")
        self.opt.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.opt)
        else:
            loss.backward()
        grad_norm = clip_gradients(self.model.student, cfg.optim.clip_grad, cfg.optim.clip_mode)
        if sv.freeze_last_layer:
            cancel_last_layer_grads(self.model.student)
        if self.scaler is not None:
            self.scaler.step(self.opt)
            self.scaler.update()
        else:
            self.opt.step()
        self.model.ema_update(sv.momentum)
        return StepResult(out, sv, grad_norm)
