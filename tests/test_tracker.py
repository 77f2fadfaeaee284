"""Eqs. 1-7 against direct reference computations (float64, fresh seeds)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from dora.model import tracker


def _ref_sinkhorn(scores: torch.Tensor, eps: float, iters: int) -> torch.Tensor:
    """Plain-domain Sinkhorn-Knopp on exp(scores/eps), rows to 1/k then columns to 1/n (eq. 4)."""
    m = torch.exp(scores.double() / eps)
    k, n = m.shape[-2:]
    for _ in range(iters):
        m = m / m.sum(-1, keepdim=True) / k
        m = m / m.sum(-2, keepdim=True) / n
    return m


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sinkhorn_matches_reference_and_marginals(seed):
    g = torch.Generator().manual_seed(seed)
    scores = torch.randn(4, 3, 50, generator=g, dtype=torch.float64)
    plan = tracker.sinkhorn_knopp(scores, eps=0.5, n_iters=200, scale="marginal")
    assert torch.allclose(plan, _ref_sinkhorn(scores, 0.5, 200), atol=1e-12)
    assert torch.allclose(plan.sum(-1), torch.full((4, 3), 1 / 3, dtype=torch.float64), atol=1e-9)
    assert torch.allclose(plan.sum(-2), torch.full((4, 50), 1 / 50, dtype=torch.float64), atol=1e-12)
    assign = tracker.sinkhorn_knopp(scores, eps=0.5, n_iters=200, scale="assignment")
    assert torch.allclose(assign, plan * 50) and torch.allclose(assign.sum(-2), torch.ones(4, 50, dtype=torch.float64))


def test_sinkhorn_is_stable_for_huge_scores_and_small_eps():
    scores = torch.tensor([[[1e4, -1e4, 3e3], [0.0, 5e3, -2e4]]])
    for eps in (0.05, 1e-4):
        plan = tracker.sinkhorn_knopp(scores, eps=eps, n_iters=30)
        assert torch.isfinite(plan).all()
        assert torch.allclose(plan.sum(-2), torch.ones(1, 3), atol=1e-5)
    half = tracker.sinkhorn_knopp(torch.randn(2, 3, 8).half() * 100, eps=0.05, n_iters=3)
    assert torch.isfinite(half).all()


def test_discover_equals_eqs_2_4_5():
    g = torch.Generator().manual_seed(3)
    b, k, n, d = 2, 3, 20, 16
    attn = torch.rand(b, k, n, generator=g, dtype=torch.float64).softmax(-1)
    q = torch.randn(b, n, d, generator=g, dtype=torch.float64)
    z = torch.randn(b, n, d, generator=g, dtype=torch.float64)
    p = attn @ q  # eq. 2
    zn = z / z.norm(dim=-1, keepdim=True)
    m = _ref_sinkhorn(p @ zn.transpose(-2, -1), 0.05, 3) * n  # eq. 4, assignment scale
    ref = m @ zn  # eq. 5
    out = tracker.discover(attn, q, z, eps=0.05, n_iters=3)
    assert torch.allclose(out.double(), ref, rtol=1e-5, atol=1e-6)
    lit = tracker.discover(attn, q, z, eps=0.05, n_iters=3, scale="marginal", normalize_tokens=False)
    assert torch.allclose(lit.double(), _ref_sinkhorn(p @ z.transpose(-2, -1), 0.05, 3) @ z, rtol=1e-5, atol=1e-6)
    assert torch.allclose(tracker.pool_prototypes(attn, q), p)


def test_track_rows_sum_to_one_and_equal_eq_6():
    g = torch.Generator().manual_seed(4)
    protos = torch.randn(2, 3, 24, generator=g)
    keys = torch.randn(2, 5, 30, 24, generator=g)
    maps = tracker.track(protos, keys)
    assert maps.shape == (2, 5, 3, 30)
    assert torch.allclose(maps.sum(-1), torch.ones(2, 5, 3), atol=1e-6)
    ref = torch.softmax(protos[:, None] @ keys.transpose(-2, -1) / math.sqrt(24), -1)
    assert torch.allclose(maps, ref, atol=1e-6)


def test_permuting_patches_permutes_outputs():
    g = torch.Generator().manual_seed(5)
    b, k, n, d, t = 1, 3, 12, 8, 4
    attn = torch.rand(b, k, n, generator=g).softmax(-1)
    q, z = torch.randn(b, n, d, generator=g), torch.randn(b, n, d, generator=g)
    keys = torch.randn(b, t, n, d, generator=g)
    perm = torch.randperm(n, generator=g)
    a = tracker.track(tracker.discover(attn, q, z, 0.05, 10), keys)
    p = tracker.track(tracker.discover(attn[..., perm], q[:, perm], z[:, perm], 0.05, 10), keys[:, :, perm])
    assert torch.allclose(a[..., perm], p, atol=1e-5)


def test_soft_masks_range_shape_and_peak():
    g = torch.Generator().manual_seed(6)
    maps = torch.rand(2, 3, 4, 12, generator=g).softmax(-1)
    masks = tracker.object_masks(maps, (3, 4), (48, 64), "paper")
    assert torch.equal(masks, tracker.object_masks(maps, (3, 4), (48, 64), "soft"))
    assert masks.shape == (2, 3, 4, 48, 64)
    assert masks.min() >= 0 and masks.max() <= 1
    top = maps.argmax(-1)[0, 0, 0]
    r, c = divmod(int(top), 4)
    block = masks[0, 0, 0, r * 16:(r + 1) * 16, c * 16:(c + 1) * 16]
    assert block.max() == masks[0, 0, 0].max() and block.max() > 0.95  # brightest where attention peaks


def test_binary_masks_follow_the_official_threshold():
    g = torch.Generator().manual_seed(7)
    maps = torch.rand(3, 2, 2, 6, generator=g)
    masks = tracker.object_masks(maps, (2, 3), (32, 48), "official")
    assert set(masks.unique().tolist()) <= {0.0, 1.0}
    norm = maps / maps.norm(dim=-1, keepdim=True)
    for t in range(2):
        for i in range(2):
            thr = norm[:, t, i].mean()  # the mean over the batch of this frame and object
            expect = (norm[:, t, i] > thr).float().reshape(3, 2, 3)
            got = masks[:, t, i, ::16, ::16]
            assert torch.equal(got, expect)


def test_choose_heads_is_seeded_and_distinct():
    a = tracker.choose_heads(6, 3, torch.Generator().manual_seed(0))
    b = tracker.choose_heads(6, 3, torch.Generator().manual_seed(0))
    assert torch.equal(a, b) and len(set(a.tolist())) == 3 and a.max() < 6
    draws = {tuple(tracker.choose_heads(6, 3, torch.Generator().manual_seed(s)).tolist()) for s in range(20)}
    assert len(draws) > 5
    with pytest.raises(ValueError, match="last_block_heads"):
        tracker.choose_heads(6, 7, torch.Generator())


def test_random_block_maps():
    g = torch.Generator().manual_seed(0)
    m = tracker.random_block_maps((2, 3, 4), (14, 14), g)
    assert m.shape == (2, 3, 4, 196) and set(m.unique().tolist()) <= {0.0, 1.0}
    cover = m.mean(-1)
    assert cover.min() >= 0.05 and cover.max() <= 0.65
    assert not torch.equal(m[0, 0, 0], m[0, 0, 1])
    assert torch.equal(m, tracker.random_block_maps((2, 3, 4), (14, 14), torch.Generator().manual_seed(0)))


def test_map_statistics():
    uniform = torch.full((2, 10), 0.1)
    one_hot = torch.eye(10)[:2]
    assert tracker.map_entropy(uniform) == pytest.approx(1.0)
    assert tracker.map_entropy(one_hot) == pytest.approx(0.0, abs=1e-6)
    assert tracker.mask_coverage(uniform) == pytest.approx(1.0)
    assert tracker.mask_coverage(one_hot) == pytest.approx(0.1)
    assert np.isfinite(float(tracker.map_entropy(torch.zeros(1, 4))))


def test_tracker_maths_is_fp32_under_bf16_autocast():
    """Same q, k, [CLS] attention and tokens: cls_attention, P' (eqs. 2, 4, 5), T' (eq. 6) and the masks
    under torch.autocast(bf16) equal their fp32 values (in bf16, /eps = 0.05 amplifies rounding 20x)."""
    from dora.config import ModelCfg
    from dora.model.vit import QKTap, create_backbone

    model = create_backbone(ModelCfg(arch="vit_small_patch16_224", depth=1))
    tap = QKTap(model)
    g = torch.Generator().manual_seed(0)
    b, h, n, dh = 2, 6, 196, 64
    tap.q, tap.k = torch.randn(b, h, n + 1, dh, generator=g), torch.randn(b, h, n + 1, dh, generator=g)
    tokens = torch.randn(b, n, h * dh, generator=g)
    keys = torch.randn(b, 8, n, h * dh, generator=g)
    heads = torch.tensor([4, 0, 2])

    def run() -> list[torch.Tensor]:
        attn = tap.cls_attention(heads)
        protos = tracker.discover(attn, tap.patch_queries(), tokens, 0.05, 30)
        maps = tracker.track(protos, keys)
        return [attn, tracker.pool_prototypes(attn, tap.patch_queries()), protos, maps,
                tracker.object_masks(maps, (14, 14), (224, 224), "binary")]

    ref = run()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = run()
    for name, r, x in zip(["cls_attention", "P", "P'", "T'", "masks"], ref, got, strict=True):
        assert x.dtype == torch.float32, name
        assert torch.allclose(x, r, rtol=0, atol=1e-5), (name, float((x - r).abs().max()))
