"""timm ViT backbones and a tap on the last block's queries and keys.

The tracker needs the teacher's last-block per-head q, k and its [CLS] attention (eq. 1) while
every block keeps fused attention (SDPA). A forward hook on the last block's `attn.qkv` linear
layer captures its output; q and k are split from it exactly as timm's Attention does, and the
[CLS] attention row is recomputed from them only for the few heads the tracker uses.
"""

from __future__ import annotations

import math
import types

import timm
import torch
import torch.nn.functional as F
from torch import nn

from dora.config import ConfigError, ModelCfg


def create_backbone(cfg: ModelCfg, drop_path: float = 0.0) -> nn.Module:
    """A timm ViT without classifier, accepting any input size (224 global, 96/112 local crops)."""
    kwargs = {k: v for k, v in (("depth", cfg.depth), ("embed_dim", cfg.embed_dim), ("num_heads", cfg.num_heads),
                                ("img_size", cfg.img_size)) if v is not None}
    model = timm.create_model(cfg.arch, pretrained=False, num_classes=0, dynamic_img_size=True,
                              drop_path_rate=drop_path, **kwargs)
    if cfg.img_size is not None and cfg.img_size % patch_size(model):
        raise ConfigError(f"config key 'model.img_size': {cfg.img_size} is not a multiple of the patch size "
                          f"{patch_size(model)}")
    if cfg.last_block_heads is not None:
        split_last_block_heads(model, cfg.last_block_heads)
    if cfg.pos_embed_resample == "dino":
        use_dino_pos_embed(model)
    return model


def dino_pos_embed(pos_embed: torch.Tensor, grid: tuple[int, int], prefix: int = 1) -> torch.Tensor:
    """DINO's (and the official DoRA code's) interpolate_pos_encoding: the stored s x s grid of
    position embeddings resampled bicubically, without antialiasing, with scale factor (g + 0.1) / s
    per axis (so the output has g cells, sampled at DINO's positions); prefix tokens unchanged."""
    n = pos_embed.shape[1] - prefix
    side = math.isqrt(n)
    if tuple(grid) == (side, side):
        return pos_embed
    dim = pos_embed.shape[-1]
    patch = pos_embed[:, prefix:].reshape(1, side, side, dim).permute(0, 3, 1, 2)
    patch = F.interpolate(patch.float(), scale_factor=((grid[0] + 0.1) / side, (grid[1] + 0.1) / side),
                          mode="bicubic", align_corners=False)
    patch = patch.permute(0, 2, 3, 1).reshape(1, -1, dim).to(pos_embed.dtype)
    return torch.cat([pos_embed[:, :prefix], patch], dim=1)


def _dino_pos_embed_method(self, x: torch.Tensor) -> torch.Tensor:
    """timm VisionTransformer._pos_embed with DINO's resampling: x [B, H, W, C] (dynamic size) or [B, N, C]."""
    grid = tuple(x.shape[1:3]) if x.ndim == 4 else tuple(self.patch_embed.grid_size)
    x = x.reshape(x.shape[0], -1, x.shape[-1])
    x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
    return self.pos_drop(x + dino_pos_embed(self.pos_embed, grid, self.num_prefix_tokens))


def use_dino_pos_embed(model: nn.Module) -> None:
    """Make a timm ViT (class token, position embedding on it, no register tokens) resample its
    position embeddings for other input sizes as DINO does (model.pos_embed_resample: dino)."""
    if (getattr(model, "pos_embed", None) is None or getattr(model, "cls_token", None) is None
            or getattr(model, "no_embed_class", False) or getattr(model, "reg_token", None) is not None):
        raise ValueError("model.pos_embed_resample=dino needs a ViT with a class token and no register tokens")
    model._pos_embed = types.MethodType(_dino_pos_embed_method, model)


def split_last_block_heads(model: nn.Module, heads: int) -> None:
    """Appendix B.2: the last block's attention uses `heads` heads of d/heads dims (same weights)."""
    attn = model.blocks[-1].attn
    dim = attn.num_heads * attn.head_dim
    if dim % heads:
        raise ValueError(f"model.last_block_heads={heads} does not divide the width {dim}")
    attn.num_heads, attn.head_dim = heads, dim // heads
    attn.scale = attn.head_dim ** -0.5


def patch_size(model: nn.Module) -> int:
    return int(model.patch_embed.patch_size[0])


def num_heads(model: nn.Module) -> int:
    return int(model.blocks[-1].attn.num_heads)


class QKTap:
    """Records q and k [B, heads, tokens, head_dim] of the last block on the next forward passes."""

    def __init__(self, model: nn.Module):
        self.attn = model.blocks[-1].attn
        self.prefix = int(getattr(model, "num_prefix_tokens", 1))
        self.q: torch.Tensor | None = None
        self.k: torch.Tensor | None = None
        self.attn.qkv.register_forward_hook(self._hook)
        self.enabled = False

    def _hook(self, module, inputs, out: torch.Tensor) -> None:
        if not self.enabled:
            return
        a = self.attn
        b, n, _ = out.shape
        q, k, _ = out.reshape(b, n, 3, a.num_heads, a.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        self.q, self.k = a.q_norm(q), a.k_norm(k)

    def __enter__(self) -> QKTap:
        self.enabled, self.q, self.k = True, None, None
        return self

    def __exit__(self, *exc) -> None:
        self.enabled = False

    def patch_queries(self) -> torch.Tensor:
        """Q~: [B, n, d] queries of the patches, heads concatenated ([CLS] and other prefix tokens dropped)."""
        return _concat_heads(self.q[:, :, self.prefix:])

    def patch_keys(self) -> torch.Tensor:
        """K~: [B, n, d] keys of the patches, heads concatenated."""
        return _concat_heads(self.k[:, :, self.prefix:])

    def cls_attention(self, heads: torch.Tensor | None = None) -> torch.Tensor:
        """Eq. 1, [CLS] row: softmax over all tokens of q_cls k^T * head_dim^-0.5, patch columns only.

        Returns [B, len(heads), n] (all heads when `heads` is None); in the block's own scale and
        softmax, so rows sum to 1 minus the attention paid to prefix tokens.
        """
        q, k = self.q[:, :, :1], self.k
        if heads is not None:
            q, k = q[:, heads], k[:, heads]
        with torch.autocast(q.device.type, enabled=False):  # fp32 even inside a bf16/fp16 step
            logits = (q.float() @ k.float().transpose(-2, -1)) * self.attn.scale
            return logits.softmax(-1)[:, :, 0, self.prefix:]


def _concat_heads(x: torch.Tensor) -> torch.Tensor:
    b, h, n, dh = x.shape
    return x.permute(0, 2, 1, 3).reshape(b, n, h * dh)


def tokens(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """All output tokens after the final norm: [B, prefix + n, d]."""
    return model.forward_features(x)


def patch_tokens(model: nn.Module, toks: torch.Tensor) -> torch.Tensor:
    return toks[:, int(getattr(model, "num_prefix_tokens", 1)):]
