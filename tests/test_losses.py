"""Eqs. 8-10 and the DINO baseline against hand-written reference loops."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from dora.model.losses import Centering, cross_entropy, dino_loss, dora_loss, local_loss, multi_object_loss

TEMP = 0.1


def _ce(p, s):
    return float(-(p * F.log_softmax(s / TEMP, -1)).sum())


def test_dino_cross_entropy_by_hand_two_views_three_classes():
    teacher = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]])  # teacher probabilities of views a, b
    student = torch.tensor([[0.2, -0.1, 0.0], [1.0, 0.0, -1.0]])  # student logits of views a, b
    # view a's teacher vs view b's student, and b vs a, by hand:
    lb = [1.0 / TEMP, 0.0, -1.0 / TEMP]
    log_sm_b = [x - math.log(sum(math.exp(y) for y in lb)) for x in lb]
    la = [0.2 / TEMP, -0.1 / TEMP, 0.0]
    log_sm_a = [x - math.log(sum(math.exp(y) for y in la)) for x in la]
    ab = -sum(p * q for p, q in zip([0.7, 0.2, 0.1], log_sm_b, strict=True))
    ba = -sum(p * q for p, q in zip([0.1, 0.1, 0.8], log_sm_a, strict=True))
    got = cross_entropy(teacher, student.flip(0), TEMP)
    assert got.tolist() == pytest.approx([ab, ba], rel=1e-6)
    # the DINO baseline with 2 global views, no locals, one frame, one clip: mean of the two terms
    out = dino_loss(teacher[None, None], student[None, None], torch.zeros(1, 1, 0, 3), TEMP)
    assert float(out["loss"]) == pytest.approx((ab + ba) / 2, rel=1e-6)


def _data(seed, b=2, t=3, v=2, k=3, m=4, K=7):
    g = torch.Generator().manual_seed(seed)
    tp = torch.rand(b, t, v, K, generator=g).softmax(-1)
    sm = torch.randn(b, t, v, k, K, generator=g)
    sl = torch.randn(b, t, m, K, generator=g)
    return tp, sm, sl


@pytest.mark.parametrize("seed", [0, 1])
def test_multi_object_loss_eq_8(seed):
    tp, sm, _ = _data(seed)
    b, t, v, k, _ = sm.shape
    got = multi_object_loss(tp, sm, TEMP)
    for f in range(t):
        terms = [_ce(tp[c, f, u], sm[c, f, w, i]) for c in range(b) for u in range(v) for w in range(v) if u != w
                 for i in range(k)]
        assert float(got[f]) == pytest.approx(sum(terms) / len(terms), rel=1e-5)
    same = multi_object_loss(tp, sm, TEMP, cross_view=False)  # official: a view and its own masked copies
    terms = [_ce(tp[c, 0, u], sm[c, 0, u, i]) for c in range(b) for u in range(v) for i in range(k)]
    assert float(same[0]) == pytest.approx(sum(terms) / len(terms), rel=1e-5)


def test_local_loss_eq_9_counts_every_crop():
    tp, _, sl = _data(2)
    b, t, v, _ = tp.shape
    m = sl.shape[2]
    got = local_loss(tp, sl, TEMP)
    for f in range(t):
        terms = [_ce(tp[c, f, u], sl[c, f, j]) for c in range(b) for u in range(v) for j in range(m)]
        assert float(got[f]) == pytest.approx(sum(terms) / len(terms), rel=1e-5)
    skipped = local_loss(tp, sl, TEMP, skip_first_crop=True)
    terms = [_ce(tp[c, 0, u], sl[c, 0, j]) for c in range(b) for u in range(v) for j in range(1, m)]
    assert float(skipped[0]) == pytest.approx(sum(terms) / len(terms), rel=1e-5)


def test_total_eq_10_is_the_mean_over_frames():
    tp, sm, sl = _data(3)
    out = dora_loss(tp, sm, sl, TEMP)
    per_frame = multi_object_loss(tp, sm, TEMP) + local_loss(tp, sl, TEMP)
    assert float(out["loss"]) == pytest.approx(float(per_frame.mean()), rel=1e-6)


def test_official_quirks_replicate_the_official_arithmetic():
    tp, sm, sl = _data(4, v=1)
    b, t, _, k, _ = sm.shape
    # the official loop (one global view, object by object, accumulator not reset)
    frame_loss, total = 0.0, 0.0
    for i in range(k):
        for f in range(t):
            mask = sum(_ce(tp[c, f, 0], sm[c, f, 0, i]) for c in range(b)) / b
            local = sum(sum(_ce(tp[c, f, 0], sl[c, f, j]) for c in range(b)) / b for j in range(1, sl.shape[2]))
            local /= sl.shape[2] - 1
            frame_loss += (mask + local) * 0.5
        frame_loss /= t
        total += frame_loss
    total /= k
    got = dora_loss(tp, sm, sl, TEMP, cross_view=False, official_quirks=True)
    assert float(got["loss"]) == pytest.approx(total, rel=1e-5)


def test_centering_update_and_sharpening():
    c = Centering(4, momentum=0.9)
    x = torch.tensor([[1.0, 2.0, 3.0, 4.0], [3.0, 2.0, 1.0, 0.0]])
    c.update(x)
    assert torch.allclose(c.center, 0.1 * x.mean(0, keepdim=True))
    c.update(x)
    assert torch.allclose(c.center, (0.9 * 0.1 + 0.1) * x.mean(0, keepdim=True))
    p = c.probs(x, 0.04)
    assert torch.allclose(p, torch.softmax((x - c.center) / 0.04, -1))
    assert torch.allclose(p.sum(-1), torch.ones(2))
