"""Health statistics of training (dora/train/health.py) against direct computations, and the collapse watch."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dora.config import load_config
from dora.model.losses import dino_loss, dora_loss
from dora.model.method import DoRA
from dora.train.health import (
    ONE_PROTOTYPE,
    UNIFORM,
    CollapseWatch,
    effective_rank,
    kl_teacher_student,
    output_std,
    statistics,
    teacher_entropy,
    teacher_top_mass,
)
from tests.conftest import ROOT

SMOKE = ROOT / "configs" / "smoke.yaml"
TEMP = 0.1
K = 16


def _kl(p: torch.Tensor, student_logits: torch.Tensor) -> float:
    """sum p log(p / q) by hand, q = softmax(student / TEMP), in float64."""
    p, q = p.double(), F.softmax(student_logits.double() / TEMP, -1)
    return float(sum(pi * math.log(pi / qi) for pi, qi in zip(p.tolist(), q.tolist(), strict=True) if pi > 0))


def test_teacher_entropy_and_top_mass_on_known_distributions():
    uniform = torch.full((4, 3, 2, K), 1.0 / K)
    assert float(teacher_entropy(uniform)) == pytest.approx(1.0)
    one_hot = F.one_hot(torch.arange(8) % K, K).float()
    assert float(teacher_entropy(one_hot)) == pytest.approx(0.0, abs=1e-7)
    two = torch.zeros(2, K)
    two[:, :2] = 0.5  # H = ln 2
    assert float(teacher_entropy(two)) == pytest.approx(math.log(2) / math.log(K), rel=1e-6)
    assert float(teacher_top_mass(uniform)) == pytest.approx(1.0 / K)
    assert float(teacher_top_mass(F.one_hot(torch.full((8,), 3), K).float())) == pytest.approx(1.0)
    assert float(teacher_top_mass(one_hot)) == pytest.approx(1.0 / 8)  # 8 rows on 8 prototypes


def test_kl_from_the_dino_and_dora_losses_equals_the_direct_sum():
    g = torch.Generator().manual_seed(0)
    b, t, v, m, k = 2, 3, 2, 3, 2
    tp = torch.randn(b, t, v, K, generator=g).mul(3).softmax(-1)
    sg = torch.randn(b, t, v, K, generator=g)
    sl = torch.randn(b, t, m, K, generator=g)
    out = dino_loss(tp, sg, sl, TEMP)
    pairs = [(tp[c, f, u], sg[c, f, w]) for c in range(b) for f in range(t) for u in range(v) for w in range(v)
             if u != w]
    n_global = len(pairs)
    pairs += [(tp[c, f, u], sl[c, f, j]) for c in range(b) for f in range(t) for u in range(v) for j in range(m)]
    want = np.mean([_kl(p, s) for p, s in pairs])
    assert float(kl_teacher_student(out["pair_ce"], tp)) == pytest.approx(want, rel=1e-5)
    assert float(out["pair_ce"]) == pytest.approx(float(out["loss"]), rel=1e-6)
    # the per-term losses: mean CE per pair of each term (nats, the same scale for DINO and DoRA)
    ce = lambda p, s: float(-(p * F.log_softmax(s / TEMP, -1)).sum())  # noqa: E731
    assert float(out["loss_global"]) == pytest.approx(np.mean([ce(p, s) for p, s in pairs[:n_global]]), rel=1e-5)
    assert float(out["loss_local"]) == pytest.approx(np.mean([ce(p, s) for p, s in pairs[n_global:]]), rel=1e-5)
    sm = torch.randn(b, t, v, k, K, generator=g)
    for cross_view, quirks in ((True, False), (False, False), (False, True)):
        out = dora_loss(tp, sm, sl, TEMP, cross_view=cross_view, official_quirks=quirks)
        obj = [(tp[c, f, u], sm[c, f, w, i]) for c in range(b) for f in range(t) for u in range(v) for w in range(v)
               if (u != w) == cross_view for i in range(k)]
        loc = [(tp[c, f, u], sl[c, f, j]) for c in range(b) for f in range(t) for u in range(v)
               for j in range(1 if quirks else 0, m)]
        assert float(out["loss_global"]) == pytest.approx(np.mean([ce(p, s) for p, s in obj]), rel=1e-5)
        assert float(out["loss_local"]) == pytest.approx(np.mean([ce(p, s) for p, s in loc]), rel=1e-5)
        want = np.mean([_kl(p, s) for p, s in obj + loc])
        assert float(kl_teacher_student(out["pair_ce"], tp)) == pytest.approx(want, rel=1e-5), (cross_view, quirks)
    one = tp[:, :, :1].expand(b, t, v, K)  # every view gives the same teacher output, and the student agrees
    same = torch.log(one) * TEMP
    out = dino_loss(one, same, same[:, :, :1], TEMP)
    assert float(kl_teacher_student(out["pair_ce"], one)) == pytest.approx(0.0, abs=1e-5)


def test_output_std_is_zero_for_identical_rows_and_about_one_when_spread():
    row = torch.randn(1, 256)
    assert float(output_std(row.expand(64, 256) * 3.0)) == pytest.approx(0.0, abs=1e-6)
    spread = torch.randn(4096, 256, generator=torch.Generator().manual_seed(0))
    assert float(output_std(spread)) == pytest.approx(1.0, abs=0.02)
    x = torch.randn(5, 7)  # the formula written out
    unit = x / x.norm(dim=1, keepdim=True)
    want = np.sqrt(7) * np.mean(np.std(unit.numpy(), axis=0))
    assert float(output_std(x)) == pytest.approx(want, rel=1e-5)


def test_effective_rank_of_features_of_known_rank():
    g = torch.Generator().manual_seed(0)
    n, d = 64, 48
    for r in (1, 5, 20):
        a = torch.randn(n, r, generator=g)
        qa, _ = torch.linalg.qr(a - a.mean(0))  # orthonormal, centred columns
        qb, _ = torch.linalg.qr(torch.randn(d, r, generator=g))
        x = (qa @ qb.T) * 7.0 + torch.randn(1, d, generator=g)  # r equal singular values, plus a shared offset
        assert float(effective_rank(x)) == pytest.approx(r, rel=1e-4), r
    x = torch.randn(n, d, generator=g) * torch.linspace(0.1, 3, d)  # unequal spectrum: the formula by hand
    s = np.linalg.svd((x - x.mean(0)).double().numpy(), compute_uv=False)
    p = s / s.sum()
    assert float(effective_rank(x)) == pytest.approx(np.exp(-(p * np.log(p)).sum()), rel=1e-4)
    assert float(effective_rank(torch.randn(1, d).expand(n, d) + 0.1)) == 0.0  # a constant batch


def _probs(kind: str, rows: int = 32) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    if kind == "uniform":
        return (torch.randn(rows, K, generator=g) * 0.01).softmax(-1)
    if kind == "one":
        return (F.one_hot(torch.full((rows,), 5), K) * 12.0 + torch.randn(rows, K, generator=g)).softmax(-1)
    return (F.one_hot(torch.randint(0, K, (rows,), generator=g), K) * 6.0).softmax(-1)  # healthy: sharp, spread


def _watch(seq: list[str], logs: int = 3) -> list[tuple[bool, str | None, bool]]:
    w = CollapseWatch(logs, 0.95, 0.9)
    out = []
    for kind in seq:
        p = _probs(kind)
        v = w.update(float(teacher_entropy(p)), float(teacher_top_mass(p)))
        out.append((v.collapse, v.kind, v.started))
    return out


def test_constructed_batches_are_what_they_claim():
    h, u, o = _probs("healthy"), _probs("uniform"), _probs("one")
    assert float(teacher_entropy(u)) > 0.99 and float(teacher_top_mass(u)) < 0.1
    assert float(teacher_top_mass(o)) > 0.99
    assert float(teacher_entropy(h)) < 0.7 and float(teacher_top_mass(h)) < 0.3


def test_collapse_watch_sets_the_flag_after_several_logs_and_clears_it():
    got = _watch(["healthy", "uniform", "uniform", "uniform", "uniform", "healthy", "uniform"])
    assert got == [(False, None, False), (False, None, False), (False, None, False), (True, UNIFORM, True),
                   (True, UNIFORM, False), (False, None, False), (False, None, False)]
    got = _watch(["one", "one", "healthy", "one", "one", "one"])
    assert [c for c, _, _ in got] == [False, False, False, False, False, True]
    assert got[-1] == (True, ONE_PROTOTYPE, True)
    assert _watch(["healthy"] * 6) == [(False, None, False)] * 6
    assert _watch(["uniform"], logs=1) == [(True, UNIFORM, True)]
    w = CollapseWatch(2)
    w.update(0.99, 0.01)
    v = w.update(0.98, 0.01)
    assert v.message() == ("warning: the teacher has been near-uniform (entropy 0.98 ln K) for 2 logs in a row: "
                           "collapse; see README 'Is it learning?'")


@pytest.mark.parametrize("method", ["dora", "dino"])
def test_monitoring_returns_what_the_statistics_need_and_leaves_the_loss_alone(method):
    torch.manual_seed(0)
    m = DoRA.from_config(load_config(SMOKE, [f"dora.method={method}"])).train()
    g = torch.Generator().manual_seed(1)
    glob, loc = torch.randn(2, 4, 2, 3, 64, 64, generator=g), torch.randn(2, 4, 2, 3, 32, 32, generator=g)
    state = {k: v.clone() for k, v in m.state_dict().items()}
    plain = m(glob, loc, 0.04, step=3)
    assert "monitor" not in plain
    m.load_state_dict(state)
    with m.monitoring():
        watched = m(glob, loc, 0.04, step=3)
    assert not m.monitor
    assert torch.equal(plain["loss"], watched["loss"])
    mon = watched["monitor"]
    assert mon["teacher_probs"].shape == (2, 4, 2, 256) and mon["teacher_cls"].shape == (16, 192)
    assert mon["student_logits"].shape == ((32 if method == "dora" else 16), 256)
    assert not any(t.requires_grad for t in mon.values())
    stats = {k: float(v) for k, v in statistics(mon, watched["pair_ce"], m.centering.center).items()}
    assert all(np.isfinite(list(stats.values())))
    assert 0 < stats["teacher_entropy"] < 1 and stats["kl_teacher_student"] > 0 and 1 < stats["effective_rank"] <= 15
    if method == "dino":
        assert stats["mask_coverage_student"] == 1.0
        assert stats["student_std"] == pytest.approx(stats["teacher_std"], rel=1e-5)  # same weights, same views
    else:  # the binary masks the student sees: a part of each view
        seen = []
        m.load_state_dict(state)
        m.student.register_forward_pre_hook(lambda mod, args: seen.append(args[0][0]))
        m(glob, loc, 0.04, step=3)
        masked = seen[0].reshape(2, 4, 2, 2, 3, 64, 64)
        visible = (masked != 0).float().amax(4).mean()  # a masked pixel is 0 in every channel
        assert 0 < stats["mask_coverage_student"] < 1
        assert stats["mask_coverage_student"] == pytest.approx(float(visible), abs=1e-6)
