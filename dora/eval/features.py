"""Frozen features of a timm ViT, as DINO's evaluations take them, extracted with a progress bar.

- `cls_feature`: the [CLS] token after the final norm (DINO's `model(x)`, what eval_knn.py uses).
- `last_blocks_feature`: the [CLS] tokens of the last n blocks, each after the final norm, concatenated
  (DINO's `get_intermediate_layers(x, n)`, eval_linear.py; n = 4 for ViT-S: 1536-d); `avgpool` adds the
  mean of the last block's patch tokens (DINO interleaves [CLS] and mean for n = 1, the only case its
  code runs; for n > 1 we append the mean).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable

import numpy as np
import torch
from torch import nn
from tqdm import tqdm


def cls_feature(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """[B, d]: [CLS] after the final norm."""
    return model.forward_features(x)[:, 0]


def block_outputs(model: nn.Module, x: torch.Tensor, n: int) -> list[torch.Tensor]:
    """The token sequences [B, tokens, d] of the last `n` blocks, each passed through the final norm."""
    x = model.norm_pre(model.patch_drop(model._pos_embed(model.patch_embed(x))))
    outs = []
    depth = len(model.blocks)
    for i, blk in enumerate(model.blocks):
        x = blk(x)
        if i >= depth - n:
            outs.append(model.norm(x))
    return outs


def last_blocks_feature(model: nn.Module, x: torch.Tensor, n: int = 4, avgpool: bool = False) -> torch.Tensor:
    """[B, n*d (+d)]: DINO's linear-probe feature."""
    outs = block_outputs(model, x, n)
    feat = torch.cat([o[:, 0] for o in outs], dim=-1)
    if not avgpool:
        return feat
    prefix = int(getattr(model, "num_prefix_tokens", 1))
    mean = outs[-1][:, prefix:].mean(dim=1)
    if n == 1:  # DINO's layout: cat((cls[..., None], mean[..., None]), -1).reshape(B, -1)
        return torch.stack([feat, mean], dim=-1).reshape(feat.shape[0], -1)
    return torch.cat([feat, mean], dim=-1)


def feature_dim(model: nn.Module, kind: str, n: int = 4, avgpool: bool = False) -> int:
    d = int(model.embed_dim)
    return d if kind == "cls" else d * (n + int(avgpool))


def run_precision(device: torch.device, precision: str, say: Callable[[str], None] | None = None) -> str:
    """The precision `autocast` really runs for `precision` on `device`: bf16/fp16 on a GPU, fp32 elsewhere
    (said once through `say` when that differs from the request). Record this, not the request."""
    ran = precision if device.type == "cuda" else "fp32"
    if ran != precision and say is not None:
        say(f"note: --precision {precision} applies on a GPU only; this {device.type} run is fp32, "
            "and metrics.json records fp32")
    return ran


def autocast(device: torch.device, precision: str):
    """bf16/fp16 autocast on a GPU; fp32 (DINO's setting) otherwise (`run_precision` says which ran)."""
    if run_precision(device, precision) == "fp32":
        return contextlib.nullcontext()
    return torch.autocast("cuda", dtype=torch.bfloat16 if precision == "bf16" else torch.float16)


@torch.no_grad()
def extract(fn: Callable[[torch.Tensor], torch.Tensor], batches: Iterable[tuple[torch.Tensor, np.ndarray]],
            n: int, dim: int, device: torch.device, desc: str, precision: str = "fp32",
            quiet: bool = False) -> tuple[torch.Tensor, float]:
    """Features [n, dim] float32 on `device` (row i = image i) and the images/s of the pass.

    The bar shows images/s and the ETA of this split.
    """
    out = torch.zeros(n, dim, dtype=torch.float32, device=device)
    done = 0
    t0 = time.perf_counter()
    with tqdm(total=n, unit="img", desc=desc, dynamic_ncols=True, disable=quiet, smoothing=0.1) as bar:
        for x, idx in batches:
            with autocast(device, precision):
                f = fn(x.to(device, non_blocking=True))
            out[torch.as_tensor(idx, device=device)] = f.float()
            done += len(idx)
            bar.update(len(idx))
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    rate = done / max(time.perf_counter() - t0, 1e-9)
    return out, rate
