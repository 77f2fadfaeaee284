"""Multi-object discovery and tracking (paper section 4, eqs. 1-7), as pure tensor functions.

Shapes: B clips, T frames, k objects, n patches, d width (heads concatenated), grid gh x gw = n.

Scale convention (see docs/DEVIATIONS.md for the evidence): eq. 4 with its marginals taken
literally (rows 1/k, columns 1/n) makes P' = M* Z~ a (1/k)-weighted average, and the logits of
eq. 6 are then so small that T' is almost uniform. By default we return M* scaled by n, so that
each patch's assignment over the k objects sums to 1 (the official code's choice), and L2-normalise
Z~; `scale="marginal"` keeps the literal marginals.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch
import torch.nn.functional as F


def fp32(fn):
    """Run `fn` with autocast disabled, so its `.float()` maths stays fp32 inside a bf16/fp16 training step
    (dividing by eps = 0.05 would otherwise amplify bf16 rounding 20x)."""

    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
        device = next((a.device.type for a in args if isinstance(a, torch.Tensor)), "cpu")
        with torch.autocast(device, enabled=False):
            return fn(*args, **kwargs)

    return wrapped


@fp32
def sinkhorn_knopp(scores: torch.Tensor, eps: float, n_iters: int, scale: str = "assignment") -> torch.Tensor:
    """Eq. 4: transport plan M* [B, k, n] from exp(scores / eps) by alternate row/column scaling.

    Computed in the log domain, so large scores or small eps cannot overflow or underflow to
    inf/NaN. After the iterations columns sum exactly to 1/n and rows to 1/k up to convergence.
    scale="marginal" returns that plan; scale="assignment" returns n * plan (columns sum to 1).
    """
    if scale not in ("assignment", "marginal"):
        raise ValueError(f"scale must be 'assignment' or 'marginal', not {scale!r}")
    dtype = torch.float64 if scores.dtype == torch.float64 else torch.float32
    log_m = scores.to(dtype) / eps
    k, n = log_m.shape[-2:]
    log_k, log_n = math.log(k), math.log(n)
    for _ in range(n_iters):
        log_m = log_m - torch.logsumexp(log_m, dim=-1, keepdim=True) - log_k
        log_m = log_m - torch.logsumexp(log_m, dim=-2, keepdim=True) - log_n
    plan = log_m.exp()
    return plan * n if scale == "assignment" else plan


@fp32
def pool_prototypes(cls_attn: torch.Tensor, queries: torch.Tensor) -> torch.Tensor:
    """Eq. 2: P = A_I Q~, [B, k, d] from [CLS] attention rows [B, k, n] and patch queries [B, n, d] (fp32)."""
    dtype = torch.promote_types(queries.dtype, torch.float32)
    return cls_attn.to(dtype) @ queries.to(dtype)


@fp32
def discover(cls_attn: torch.Tensor, queries: torch.Tensor, tokens: torch.Tensor, eps: float, n_iters: int,
             scale: str = "assignment", normalize_tokens: bool = True) -> torch.Tensor:
    """Refined prototypes P' = M* Z~ [B, k, d] (eqs. 2, 4, 5).

    cls_attn [B, k, n]: the chosen heads' [CLS]->patch attention; queries [B, n, d]: teacher patch
    queries at t0; tokens [B, n, d]: teacher output patch embeddings Z~ at t0.
    """
    p = pool_prototypes(cls_attn, queries).float()
    z = F.normalize(tokens.float(), dim=-1) if normalize_tokens else tokens.float()
    plan = sinkhorn_knopp(p @ z.transpose(-2, -1), eps, n_iters, scale)
    return plan.to(z.dtype) @ z


@fp32
def track(prototypes: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """Eqs. 3/6: T'_t = softmax_n(P' K~_t^T / sqrt(d)) -> [B, T, k, n] for prototypes [B, k, d], keys [B, T, n, d]."""
    d = prototypes.shape[-1]
    logits = torch.einsum("bkd,btnd->btkn", prototypes.float(), keys.float()) / math.sqrt(d)
    return logits.softmax(-1)


@fp32
def object_masks(maps: torch.Tensor, grid: tuple[int, int], size: tuple[int, int],
                 mode: str = "binary") -> torch.Tensor:
    """Eq. 7's T_i: each row of `maps` [B, T, k, n] as a gh x gw map upsampled to size -> [B, T, k, H, W].

    binary (alias official): the official code's mask (default; what the paper's numbers used): the row
                             L2-normalised, 1 where above the mean of that object's normalised rows over
                             batch x patches, separately for each t, nearest upsampling.
    soft (alias paper, experimental): the map divided by its maximum (so in [0, 1], the most attended
                             patch fully visible), bilinear upsampling.
    """
    mode = {"paper": "soft", "official": "binary"}.get(mode, mode)
    b, t, k, n = maps.shape
    gh, gw = grid
    if gh * gw != n:
        raise ValueError(f"grid {grid} does not hold {n} patches")
    if mode == "soft":
        m = maps / maps.amax(-1, keepdim=True).clamp_min(1e-12)
        up = F.interpolate(m.reshape(b * t * k, 1, gh, gw).float(), size=size, mode="bilinear", align_corners=False)
        return up.clamp(0, 1).reshape(b, t, k, *size)
    if mode == "binary":
        m = F.normalize(maps.float(), dim=-1)
        m = (m > m.mean(dim=(0, 3), keepdim=True)).float()
        up = F.interpolate(m.reshape(b * t * k, 1, gh, gw), size=size, mode="nearest")
        return up.reshape(b, t, k, *size)
    raise ValueError(f"mask mode must be 'soft' or 'binary', not {mode!r}")


def choose_heads(num_heads: int, k: int, generator: torch.Generator) -> torch.Tensor:
    """k distinct heads of num_heads, drawn from a seeded generator (once per iteration)."""
    if k > num_heads:
        raise ValueError(f"cannot draw {k} objects from {num_heads} heads; set model.last_block_heads >= {k}")
    return torch.randperm(num_heads, generator=generator)[:k]


def step_generator(seed: int, rank: int, step: int) -> torch.Generator:
    """The generator of one training iteration of one rank, seeded by (seed, rank, step): ranks draw
    different heads (as the official unseeded `random.sample` per process does), runs and resumed runs
    draw the same ones."""
    state = np.random.SeedSequence([seed, rank, step]).generate_state(2, np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


def random_block_maps(shape: tuple[int, int, int], grid: tuple[int, int], generator: torch.Generator,
                      keep: tuple[float, float] = (0.1, 0.5)) -> torch.Tensor:
    """Random block-wise maps, [B, T, k, n] in {0, 1}: each is a random union of rectangles (aspect
    0.3-3.3) covering a fraction in `keep` of the patches (at least the drawn fraction). As masks
    (dora.random_mask=keep) the student sees only these 10-50 %; as A_I (random_prototypes) they
    are the pooled regions."""
    b, t, k = shape
    gh, gw = grid
    n = gh * gw
    out = torch.zeros(b * t * k, gh, gw)
    u = lambda: float(torch.rand((), generator=generator))  # noqa: E731
    for m in out:
        target = round((keep[0] + (keep[1] - keep[0]) * u()) * n)
        for _ in range(100):
            if m.sum() >= target:
                break
            area = max(1.0, min(target - float(m.sum()), n / 4) * (0.3 + 0.7 * u()))
            aspect = math.exp(math.log(0.3) + (math.log(1 / 0.3) - math.log(0.3)) * u())
            h = min(gh, max(1, round(math.sqrt(area * aspect))))
            w = min(gw, max(1, round(math.sqrt(area / aspect))))
            top = int(u() * (gh - h + 1))
            left = int(u() * (gw - w + 1))
            m[top:top + h, left:left + w] = 1
    return out.reshape(b, t, k, n)


def ibot_block_maps(shape: tuple[int, int, int], grid: tuple[int, int], generator: torch.Generator,
                    ratio: tuple[float, float] = (0.1, 0.5)) -> torch.Tensor:
    """Table 2c's random block-wise masks as iBOT draws them (BEiT's block generator), [B, T, k, n] in
    {0, 1}, 1 = visible: per map a masked ratio r ~ U(ratio) (iBOT: pred_ratio 0.3 +- 0.2); blocks of
    at least (min(gh, gw) // 3)^2 patches, aspect 0.3-3.3, are hidden while they add no more than the
    r * n patches still to hide; 10 failed tries end the map. So 50-90 % of the patches stay visible."""
    b, t, k = shape
    gh, gw = grid
    n, low = gh * gw, (min(gh, gw) // 3) ** 2
    log_aspect = (math.log(0.3), math.log(1 / 0.3))
    hidden = torch.zeros(b * t * k, gh, gw)
    u = lambda: float(torch.rand((), generator=generator))  # noqa: E731
    for m in hidden:
        target, count = (ratio[0] + (ratio[1] - ratio[0]) * u()) * n, 0
        while count < target:
            room, added = target - count, 0
            for _ in range(10):
                area = low + (room - low) * u()
                aspect = math.exp(log_aspect[0] + (log_aspect[1] - log_aspect[0]) * u())
                h, w = round(math.sqrt(area * aspect)), round(math.sqrt(area / aspect))
                if not (w < gw and h < gh):
                    continue
                top, left = int(u() * (gh - h + 1)), int(u() * (gw - w + 1))
                new = h * w - int(m[top:top + h, left:left + w].sum())
                if 0 < new <= room:  # a block that hides new patches without overshooting
                    m[top:top + h, left:left + w] = 1
                    added = new
                    break
            if not added:
                break
            count += added
    return 1 - hidden.reshape(b, t, k, n)


def map_entropy(maps: torch.Tensor) -> torch.Tensor:
    """Mean entropy of the rows of `maps` [..., n] divided by log n: 1 = uniform, 0 = one patch."""
    p = maps.float().clamp_min(1e-12)
    return (-(p * p.log()).sum(-1) / math.log(maps.shape[-1])).mean()


def mask_coverage(maps: torch.Tensor) -> torch.Tensor:
    """Mean of the soft masks (each map divided by its max): the visible fraction, 1 = no masking."""
    return (maps.float() / maps.float().amax(-1, keepdim=True).clamp_min(1e-12)).mean()
