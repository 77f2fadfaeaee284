"""Schedules, parameter groups, LARS, clipping and the frozen last layer."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from dora.model.head import DINOHead
from dora.train.schedules import (
    LARS,
    build_optimizer,
    cancel_last_layer_grads,
    clip_gradients,
    cosine,
    param_groups,
    set_lr_wd,
    teacher_temp,
)


def test_cosine_warmup_and_end_points():
    assert cosine(0, 100, 1.0, 0.1, warmup=10) == 0.0
    assert cosine(5, 100, 1.0, 0.1, warmup=10) == pytest.approx(5 / 9)  # np.linspace(0, 1, 10)[5], as DINO
    assert cosine(9, 100, 1.0, 0.1, warmup=10) == pytest.approx(1.0)
    assert cosine(10, 100, 1.0, 0.1, warmup=10) == pytest.approx(1.0)
    assert cosine(55, 100, 1.0, 0.1, warmup=10) == pytest.approx(0.55)
    assert cosine(100, 100, 1.0, 0.1, warmup=10) == pytest.approx(0.1)
    assert cosine(1000, 100, 1.0, 0.1, warmup=10) == pytest.approx(0.1)
    vals = [cosine(i, 100, 0.996, 1.0) for i in range(101)]  # EMA momentum rises to 1
    assert vals[0] == pytest.approx(0.996) and vals[-1] == pytest.approx(1.0) and vals == sorted(vals)
    assert cosine(37, 100, 0.04, 0.4) == pytest.approx(0.4 + 0.5 * (0.04 - 0.4) * (1 + math.cos(math.pi * 0.37)))


def test_teacher_temperature_warmup():
    assert teacher_temp(0, 10, 0.04, 0.07, 3, per="step") == pytest.approx(0.04)
    assert teacher_temp(15, 10, 0.04, 0.07, 3, per="step") == pytest.approx(0.055)
    assert teacher_temp(30, 10, 0.04, 0.07, 3, per="step") == pytest.approx(0.07)
    assert teacher_temp(5, 10, 0.04, 0.04, 0) == pytest.approx(0.04)
    # DINO / official: np.linspace(0.04, 0.07, 3)[epoch], one value for the whole epoch
    dino = list(np.concatenate((np.linspace(0.04, 0.07, 3), np.ones(2) * 0.07)))
    for step in range(50):
        assert teacher_temp(step, 10, 0.04, 0.07, 3, per="epoch") == pytest.approx(dino[step // 10])


def _net():
    return nn.Sequential(nn.Linear(4, 8), nn.LayerNorm(8), DINOHead(8, 10, 6, 5, norm_last_layer=False))


def _dino_rule(model: nn.Module) -> tuple[set[str], set[str]]:
    """DINO's utils.get_params_groups, restated: no decay for names ending in .bias or 1-D params."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    free = {n for n, p in named if n.endswith(".bias") or len(p.shape) == 1}
    return {n for n, _ in named} - free, free


def test_head_gain_is_weight_decayed_as_dino_does():
    """DINO's head: nn.utils.weight_norm gives g of shape [out, 1] (2-D), so DINO's rule decays it."""
    legacy = nn.Sequential(nn.Linear(4, 8), nn.LayerNorm(8), nn.utils.weight_norm(nn.Linear(8, 10, bias=False)))
    reg_names, free_names = _dino_rule(legacy)
    assert "2.weight_g" in reg_names and legacy[2].weight_g.shape == (10, 1)
    net = _net()
    names = {id(p): n for n, p in net.named_parameters()}
    gain = "2.last_layer.parametrizations.weight.original0"
    reg, free = param_groups(net)
    assert {names[id(p)] for p in reg["params"]} == _dino_rule(net)[0] and gain in _dino_rule(net)[0]
    assert {names[id(p)] for p in free["params"]} == _dino_rule(net)[1]
    reg, free = param_groups(net, decay_head_gain=False)
    assert gain in {names[id(p)] for p in free["params"]}
    groups = build_optimizer("adamw", net, decay_head_gain=True).param_groups
    assert any(p is dict(net.named_parameters())[gain] for p in groups[0]["params"])


def test_no_weight_decay_on_biases_and_1d_params():
    net = _net()
    reg, free = param_groups(net, decay_head_gain=False)
    assert all(p.ndim > 1 for p in reg["params"])
    names = {id(p): n for n, p in net.named_parameters()}
    assert all(p.ndim <= 1 or names[id(p)].endswith("original0") for p in free["params"])
    assert free["weight_decay"] == 0.0
    assert len(reg["params"]) + len(free["params"]) == len([p for p in net.parameters() if p.requires_grad])
    opt = build_optimizer("adamw", net)
    set_lr_wd(opt, 0.1, 0.3)
    assert [g["lr"] for g in opt.param_groups] == [0.1, 0.1]
    assert [g["weight_decay"] for g in opt.param_groups] == [0.3, 0.0]


def test_lars_step_matches_formula():
    w = nn.Parameter(torch.tensor([[3.0, 4.0]]))
    b = nn.Parameter(torch.tensor([1.0]))
    opt = LARS([{"params": [w]}, {"params": [b]}], lr=0.1, weight_decay=0.5, momentum=0.9, eta=0.001)
    w.grad = torch.tensor([[1.0, 0.0]])
    b.grad = torch.tensor([2.0])
    opt.step()
    dp = torch.tensor([[1.0, 0.0]]) + 0.5 * torch.tensor([[3.0, 4.0]])
    q = 0.001 * 5.0 / dp.norm()
    assert torch.allclose(w, torch.tensor([[3.0, 4.0]]) - 0.1 * q * dp)
    assert torch.allclose(b, torch.tensor([1.0 - 0.1 * 2.0]))  # 1-D: no decay, no trust ratio
    assert isinstance(build_optimizer("lars", _net()), LARS)


def test_clipping_per_parameter_and_global():
    net = nn.Sequential(nn.Linear(2, 2, bias=False), nn.Linear(2, 2, bias=False))
    for p, s in zip(net.parameters(), (3.0, 0.1), strict=True):
        p.grad = torch.full_like(p, s)
    total = clip_gradients(net, 1.0, "per_param")
    assert total == pytest.approx(math.sqrt(4 * 9 + 4 * 0.01))
    g0, g1 = (p.grad for p in net.parameters())
    assert g0.norm() == pytest.approx(1.0, rel=1e-4) and g1.norm() == pytest.approx(0.2)  # only the big one
    for p, s in zip(net.parameters(), (3.0, 0.1), strict=True):
        p.grad = torch.full_like(p, s)
    clip_gradients(net, 1.0, "global")
    norms = [p.grad.norm() for p in net.parameters()]
    assert float(torch.stack(norms).norm()) == pytest.approx(1.0, rel=1e-4)
    assert float(norms[0] / norms[1]) == pytest.approx(30.0, rel=1e-4)  # direction kept


def test_last_layer_frozen():
    net = _net()
    for p in net.parameters():
        p.grad = torch.ones_like(p)
    cancel_last_layer_grads(net)
    for n, p in net.named_parameters():
        assert (p.grad is None) == ("last_layer" in n)


def test_step_values_follow_the_config():
    from dora.config import load_config
    from dora.train.schedules import step_values
    from tests.conftest import ROOT

    cfg = load_config(ROOT / "configs" / "dora_vits16.yaml", ["train.epochs=10", "optim.warmup_epochs=2",
                                                               "loss.warmup_teacher_temp=0.02",
                                                               "loss.warmup_teacher_temp_epochs=1"])
    values = lambda *a, **k: step_values(cfg.optim, cfg.loss, cfg.train.epochs, *a, **k)  # noqa: E731
    first = values(0, iters_per_epoch=100, global_batch=128)
    peak = values(200, iters_per_epoch=100, global_batch=128)
    last = values(1000, iters_per_epoch=100, global_batch=128)
    assert first.lr == 0.0 and peak.lr == pytest.approx(5e-4 * 128 / 256) and last.lr == pytest.approx(1e-6)
    assert first.weight_decay == pytest.approx(0.04) and last.weight_decay == pytest.approx(0.4)
    assert first.momentum == pytest.approx(0.996) and last.momentum == pytest.approx(1.0)
    assert first.teacher_temp == pytest.approx(0.02) and peak.teacher_temp == pytest.approx(0.04)
    assert first.freeze_last_layer and values(99, 100, 128).freeze_last_layer
    assert not values(100, 100, 128).freeze_last_layer


def _backbone_movement(cfg, steps: int) -> float:
    """||w_steps - w_0|| / ||w_0|| over the student backbone after `steps` optimiser steps of DoRA at the
    config's schedule just after its lr warm-up (an "epoch" of 30 steps here, global batch 128 as in the paper)."""
    from dora.model.method import DoRA
    from dora.train.schedules import step_values

    torch.manual_seed(0)
    model = DoRA.from_config(cfg).train()
    opt = build_optimizer(cfg.optim.optimizer, model.student)
    w0 = torch.cat([p.detach().flatten().clone() for p in model.student.backbone.parameters()])
    g = torch.Generator().manual_seed(1)
    start = round(cfg.optim.warmup_epochs * 30)
    for s in range(start, start + steps):
        sv = step_values(cfg.optim, cfg.loss, cfg.train.epochs, s, iters_per_epoch=30, global_batch=128)
        set_lr_wd(opt, sv.lr, sv.weight_decay)
        globals_ = torch.randn(2, 4, 2, 3, 64, 64, generator=g)
        locals_ = torch.randn(2, 4, 2, 3, 32, 32, generator=g)
        loss = model(globals_, locals_, sv.teacher_temp)["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        clip_gradients(model.student, cfg.optim.clip_grad, cfg.optim.clip_mode)
        opt.step()
        model.ema_update(sv.momentum)
    w = torch.cat([p.detach().flatten() for p in model.student.backbone.parameters()])
    return float((w - w0).norm() / w0.norm())


def test_paper_optimiser_settings_train_the_smoke_model():
    """30 steps with the optimiser section of configs/dora_vits16.yaml move the backbone by >= 1e-2
    relative (AdamW: ~4e-2; the paper's literal LARS at lr 5e-4: ~4e-3, nearly all of it in biases and norms,
    whose updates LARS leaves unscaled: docs/DEVIATIONS.md)."""
    import yaml

    from dora.config import load_config
    from tests.conftest import ROOT

    paper = yaml.safe_load((ROOT / "configs" / "dora_vits16.yaml").read_text())
    overrides = [f"optim.{k}={v}" for k, v in paper["optim"].items()] + [f"train.epochs={paper['train']['epochs']}"]
    cfg = load_config(ROOT / "configs" / "smoke.yaml", overrides)
    moved = _backbone_movement(cfg, 30)
    assert moved >= 1e-2, (cfg.optim.optimizer, moved)
    lars = load_config(ROOT / "configs" / "smoke.yaml",
                       [*overrides, "optim.optimizer=lars", "optim.allow_small_lars_lr=true"])
    assert _backbone_movement(lars, 30) < 1e-2  # the literal "LARS" reading fails the same bar (refused by default)
