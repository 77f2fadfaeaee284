"""The q/k tap on the teacher's last block equals an explicit recomputation; fused attention stays on."""

from __future__ import annotations

import pytest
import torch

from dora.config import ModelCfg
from dora.model.head import DINOHead
from dora.model.vit import QKTap, create_backbone, num_heads, split_last_block_heads


def _explicit(model, x):
    """Recompute the last block's q, k and attention by hand from its input."""
    captured = {}
    h = model.blocks[-1].register_forward_pre_hook(lambda m, args: captured.setdefault("x", args[0]))
    model.forward_features(x)
    h.remove()
    blk = model.blocks[-1]
    a = blk.attn
    y = blk.norm1(captured["x"])
    w, bias = a.qkv.weight, a.qkv.bias
    dim = a.num_heads * a.head_dim
    q = (y @ w[:dim].T + bias[:dim]).reshape(*y.shape[:2], a.num_heads, a.head_dim).transpose(1, 2)
    k = (y @ w[dim:2 * dim].T + bias[dim:2 * dim]).reshape(*y.shape[:2], a.num_heads, a.head_dim).transpose(1, 2)
    attn = ((q @ k.transpose(-2, -1)) * a.head_dim ** -0.5).softmax(-1)
    return q, k, attn


@pytest.mark.parametrize("size", [64, 96])
def test_tap_equals_explicit_recomputation(size):
    torch.manual_seed(0)
    model = create_backbone(ModelCfg(arch="vit_tiny_patch16_224", depth=3)).eval()
    tap = QKTap(model)
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        before = model.forward_features(x)
        with tap:
            during = model.forward_features(x)
        q, k, attn = _explicit(model, x)
    assert torch.equal(before, during)  # the hook only observes
    assert torch.allclose(tap.q, q, atol=1e-5) and torch.allclose(tap.k, k, atol=1e-5)
    n = (size // 16) ** 2
    assert tap.patch_queries().shape == (2, n, 192)
    assert torch.allclose(tap.patch_queries(), q[:, :, 1:].transpose(1, 2).reshape(2, n, 192), atol=1e-5)
    assert torch.allclose(tap.patch_keys(), k[:, :, 1:].transpose(1, 2).reshape(2, n, 192), atol=1e-5)
    heads = torch.tensor([2, 0])
    assert torch.allclose(tap.cls_attention(heads), attn[:, heads, 0, 1:], atol=1e-5)


def test_tap_is_off_outside_its_context():
    model = create_backbone(ModelCfg(arch="vit_tiny_patch16_224", depth=2)).eval()
    tap = QKTap(model)
    with torch.no_grad():
        model.forward_features(torch.randn(1, 3, 32, 32))
    assert tap.q is None


def test_student_keeps_fused_attention():
    model = create_backbone(ModelCfg(arch="vit_tiny_patch16_224", depth=2))
    QKTap(model)
    assert all(getattr(b.attn, "fused_attn", True) == model.blocks[0].attn.fused_attn for b in model.blocks)
    import timm.layers

    assert model.blocks[-1].attn.fused_attn == timm.layers.use_fused_attn()


def test_more_heads_in_last_block_keep_weights():
    model = create_backbone(ModelCfg(arch="vit_small_patch16_224", depth=2))
    params = sum(p.numel() for p in model.parameters())
    split_last_block_heads(model, 16)
    assert num_heads(model) == 16 and model.blocks[-1].attn.head_dim == 24
    assert sum(p.numel() for p in model.parameters()) == params
    tap = QKTap(model)
    with torch.no_grad(), tap:
        model.forward_features(torch.randn(1, 3, 64, 64))
    assert tap.q.shape == (1, 16, 17, 24) and tap.cls_attention().shape == (1, 16, 16)
    with pytest.raises(ValueError):
        split_last_block_heads(model, 5)
    assert num_heads(create_backbone(ModelCfg(arch="vit_small_patch16_224", depth=2, last_block_heads=32))) == 32


def test_backbone_takes_global_and_local_sizes():
    model = create_backbone(ModelCfg(arch="vit_tiny_patch16_224", depth=2), drop_path=0.1)
    for s in (224, 96, 112):
        assert model(torch.randn(1, 3, s, s)).shape == (1, 192)


def test_dino_head_shapes_and_frozen_norm():
    head = DINOHead(192, out_dim=100, hidden_dim=64, bottleneck_dim=32, norm_last_layer=True)
    out = head(torch.randn(5, 192))
    assert out.shape == (5, 100)
    g = head.last_layer.parametrizations.weight.original0
    assert not g.requires_grad and torch.all(g == 1)
    # with |g| = 1 each prototype has unit norm, and the bottleneck is unit norm: |logit| <= 1
    assert out.abs().max() <= 1 + 1e-5
    free = DINOHead(192, out_dim=100, hidden_dim=64, bottleneck_dim=32, norm_last_layer=False)
    assert free.last_layer.parametrizations.weight.original0.requires_grad
    assert len([m for m in head.mlp if isinstance(m, torch.nn.Linear)]) == 3
    assert not any(isinstance(m, torch.nn.BatchNorm1d) for m in head.modules())


def test_img_size_sets_the_position_grid_and_an_export_without_config_reloads_it(tmp_path):
    """model.img_size=64: position embeddings for a 4 x 4 grid (no resampling at 64 px); a DINO-format
    export (weights only) of it is rebuilt with that grid by the evaluations and loads strictly."""
    from dora.checkpoint import load_backbone
    from dora.eval.common import load_encoder, model_cfg_from_weights

    cfg = ModelCfg(arch="vit_tiny_patch16_224", depth=2, img_size=64, drop_path=0.0)
    model = create_backbone(cfg).eval()
    assert model.pos_embed.shape[1] == 1 + 16
    weights = model.state_dict()
    rebuilt = model_cfg_from_weights(weights)
    assert rebuilt.img_size == 64 and rebuilt.depth == 2
    assert model_cfg_from_weights(create_backbone(ModelCfg(arch="vit_tiny_patch16_224", depth=2)).state_dict()
                                  ).img_size is None  # the arch's own 224 grid
    path = tmp_path / "export.pth"
    torch.save({"teacher": {f"backbone.{k}": v for k, v in weights.items()}}, path)
    enc = load_encoder(path)
    x = torch.randn(2, 3, 64, 64)
    assert torch.equal(enc.model.forward_features(x), model.forward_features(x))
    other = create_backbone(rebuilt)
    load_backbone(other, weights)
