"""Per-iteration schedules, parameter groups, optimisers (LARS, AdamW) and gradient handling."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from dora.config import LossCfg, OptimCfg


def cosine(step: int, total: int, base: float, final: float, warmup: int = 0, warmup_start: float = 0.0) -> float:
    """DINO's `utils.cosine_scheduler` at iteration `step`: a linear warm-up over `warmup` iterations as
    `np.linspace(warmup_start, base, warmup)` (so it reaches base at iteration warmup - 1), then cosine
    from base to final at iteration `total` (held there afterwards)."""
    if step < warmup:
        return warmup_start + (base - warmup_start) * step / max(1, warmup - 1)
    span = max(1, total - warmup)
    x = min(step - warmup, span) / span
    return final + 0.5 * (base - final) * (1 + math.cos(math.pi * x))


def teacher_temp(step: int, iters_per_epoch: int, warmup_temp: float, temp: float, warmup_epochs: float,
                 per: str = "step") -> float:
    """Teacher temperature: linear from warmup_temp to temp over warmup_epochs, then constant.

    per="epoch": DINO's and the official code's `np.linspace(warmup_temp, temp, W)[epoch]` (W whole
    epochs, one value per epoch, temp reached in epoch W - 1); per="step": linear in the iteration."""
    if per == "epoch":
        w, epoch = round(warmup_epochs), step // max(1, iters_per_epoch)
        return temp if epoch >= w else warmup_temp + (temp - warmup_temp) * epoch / max(1, w - 1)
    warm = round(warmup_epochs * iters_per_epoch)
    return temp if step >= warm else warmup_temp + (temp - warmup_temp) * step / max(1, warm)


def param_groups(model: nn.Module, decay_head_gain: bool = True) -> list[dict]:
    """Two groups: weights with weight decay; biases and 1-D parameters (norms) without: DINO's
    utils.get_params_groups rule. The weight-norm gain g of the head's last layer has shape
    [out_dim, 1] (2-D, name not ending in .bias), so DINO and the official code decay it;
    decay_head_gain=False moves it to the undecayed group."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        gain = "original0" in name or name.endswith("weight_g")
        (no_decay if p.ndim <= 1 or name.endswith(".bias") or (gain and not decay_head_gain) else decay).append(p)
    return [{"params": decay}, {"params": no_decay, "weight_decay": 0.0, "lars_exclude": True}]


class LARS(torch.optim.Optimizer):
    """LARS as used by DINO/SwAV: SGD with momentum and a layer-wise trust ratio ||w|| / ||g + wd w||,
    not applied to 1-D parameters (biases, norms)."""

    def __init__(self, params, lr: float = 0.0, weight_decay: float = 0.0, momentum: float = 0.9,
                 eta: float = 0.001):
        super().__init__(params, dict(lr=lr, weight_decay=weight_decay, momentum=momentum, eta=eta))

    @torch.no_grad()
    def step(self, closure=None):
        for g in self.param_groups:
            for p in g["params"]:
                if p.grad is None:
                    continue
                dp = p.grad
                if p.ndim > 1:
                    dp = dp.add(p, alpha=g["weight_decay"])
                    pn, un = torch.norm(p), torch.norm(dp)
                    q = torch.where((pn > 0) & (un > 0), g["eta"] * pn / un, torch.ones_like(pn))
                    dp = dp.mul(q)
                state = self.state[p]
                if "mu" not in state:
                    state["mu"] = torch.zeros_like(p)
                mu = state["mu"]
                mu.mul_(g["momentum"]).add_(dp)
                p.add_(mu, alpha=-g["lr"])


def build_optimizer(name: str, model: nn.Module, decay_head_gain: bool = True) -> torch.optim.Optimizer:
    """`lars` (the paper) or `adamw` (the official code); lr and weight decay are set every step."""
    groups = param_groups(model, decay_head_gain)
    if name == "adamw":
        return torch.optim.AdamW([{k: v for k, v in g.items() if k != "lars_exclude"} for g in groups])
    if name == "lars":
        return LARS([{k: v for k, v in g.items() if k != "lars_exclude"} for g in groups])
    raise ValueError(f"unknown optimizer {name!r}")


def set_lr_wd(opt: torch.optim.Optimizer, lr: float, wd: float) -> None:
    """Set the learning rate of all groups and the weight decay of the regularised (first) group."""
    for i, g in enumerate(opt.param_groups):
        g["lr"] = lr
        if i == 0:
            g["weight_decay"] = wd


def clip_gradients(model: nn.Module, max_norm: float, mode: str = "per_param") -> float:
    """per_param: DINO's clipping of each parameter's gradient to norm max_norm separately;
    global: torch's clip_grad_norm_ over all parameters. Returns the global norm before clipping."""
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    if not grads:
        return 0.0
    total = torch.norm(torch.stack([g.detach().float().norm(2) for g in grads]), 2)
    if max_norm <= 0:
        return float(total)
    if mode == "global":
        torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
    elif mode == "per_param":
        for g in grads:
            coef = max_norm / (g.detach().float().norm(2) + 1e-6)
            if coef < 1:
                g.mul_(coef)
    else:
        raise ValueError(f"unknown clip mode {mode!r}")
    return float(total)


def cancel_last_layer_grads(model: nn.Module) -> None:
    """Drop the gradients of the DINO head's last layer (frozen during the first epoch)."""
    for name, p in model.named_parameters():
        if "last_layer" in name:
            p.grad = None


@dataclass(frozen=True)
class StepValues:
    """Everything the schedules set at one iteration."""

    lr: float
    weight_decay: float
    momentum: float  # teacher EMA
    teacher_temp: float
    freeze_last_layer: bool


def total_steps(epochs: float, iters_per_epoch: int) -> int:
    """Iterations of the whole run: train.epochs epochs (in train.epoch_unit) of iters_per_epoch steps,
    at least 1 for any positive length; 0 epochs is 0 steps (the run writes its step-0 checkpoint)."""
    return 0 if epochs <= 0 else max(1, round(epochs * iters_per_epoch))


def step_values(o: OptimCfg, lo: LossCfg, epochs: float, step: int, iters_per_epoch: int,
                global_batch: int) -> StepValues:
    """Per-iteration values: lr (base * global_batch / 256, warm-up then cosine to min_lr), weight
    decay (cosine 0.04 -> 0.4), EMA momentum (cosine 0.996 -> 1), teacher temperature (linear
    warm-up), and whether the head's last layer is still frozen."""
    total = total_steps(epochs, iters_per_epoch)
    base_lr = o.lr * global_batch / 256.0
    return StepValues(
        lr=cosine(step, total, base_lr, o.min_lr, warmup=round(o.warmup_epochs * iters_per_epoch)),
        weight_decay=cosine(step, total, o.weight_decay, o.weight_decay_end),
        momentum=cosine(step, total, o.momentum_teacher, 1.0),
        teacher_temp=teacher_temp(step, iters_per_epoch, lo.warmup_teacher_temp, lo.teacher_temp,
                                  lo.warmup_teacher_temp_epochs, lo.teacher_temp_per),
        freeze_last_layer=step < round(o.freeze_last_layer_epochs * iters_per_epoch),
    )
