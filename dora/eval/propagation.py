"""Semi-supervised video object segmentation by label propagation on frozen patch features, exactly
as DINO's eval_video_segmentation.py (Caron et al., 2021; the protocol of the paper's Table 4a).

Each frame is resized so that its short side is 480 and its long side is floored to a multiple of 64,
and encoded into last-block patch tokens after the final norm. Frame t's labels are a mix of the labels
of its context (frame 0's ground truth and the soft predictions of the 7 previous frames): the affinity
of a target patch to a context patch is exp(cos / 0.1), restricted to a (2·12+1)² window around the
target; only the top 5 over the whole context are kept and normalised to sum to 1. The mixed soft labels
are upsampled bilinearly ×patch, min-max normalised per label, argmaxed and resized back (nearest).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from dora.data import IMAGENET_MEAN
from pipeline.errors import InputError


@dataclass
class PropagationCfg:
    """Every constant of DINO's protocol (their defaults)."""

    short_side: int = 480
    multiple: int = 64  # the long side is floored to a multiple of this
    n_last: int = 7  # previous frames in the context (besides frame 0)
    radius: int = 12  # neighbourhood: |Δrow|, |Δcol| ≤ radius patches; 0 = no restriction
    topk: int = 5
    temperature: float = 0.1
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = (0.228, 0.224, 0.225)  # sic: DINO's video script uses 0.228

    def as_dict(self) -> dict:
        return asdict(self)


def input_size(h: int, w: int, cfg: PropagationCfg) -> tuple[int, int]:
    """(height, width) of the network input: short side `short_side`, long side floored to `multiple`."""
    if h > w:
        return int(cfg.short_side * h / w // cfg.multiple * cfg.multiple), cfg.short_side
    return cfg.short_side, int(cfg.short_side * w / h // cfg.multiple * cfg.multiple)


def read_frame(path: Path, cfg: PropagationCfg) -> tuple[torch.Tensor, tuple[int, int]]:
    """The normalised network input [3, H, W] of a JPEG frame (OpenCV decode and bilinear resize, as
    DINO) and the frame's original (height, width)."""
    img = cv2.imread(str(path))
    if img is None:
        raise InputError(f"{path}: not a readable image; DAVIS frames are JPEG files")
    h, w = img.shape[:2]
    th, tw = input_size(h, w, cfg)
    img = cv2.resize(img, (tw, th))[:, :, ::-1].astype(np.float32) / 255.0
    x = torch.from_numpy(img.transpose(2, 0, 1).copy())
    x = (x - torch.tensor(cfg.mean).view(3, 1, 1)) / torch.tensor(cfg.std).view(3, 1, 1)
    return x, (h, w)


def first_labels(labels: np.ndarray, grid: tuple[int, int]) -> torch.Tensor:
    """Frame 0's ground truth at patch resolution, one-hot [C, h, w] with C = 1 + its largest label
    (nearest-neighbour resize; void 255 counts as background)."""
    labels = np.where(labels == 255, 0, labels).astype(np.uint8)
    small = np.array(Image.fromarray(labels).resize((grid[1], grid[0]), Image.NEAREST))
    small_t = torch.from_numpy(small.astype(np.int64))
    return F.one_hot(small_t, int(small.max()) + 1).permute(2, 0, 1).float()


def neighbourhood(h: int, w: int, radius: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """[h·w, h·w] float mask: 1 where the source patch lies within `radius` rows and columns of the target."""
    r, c = torch.meshgrid(torch.arange(h, device=device), torch.arange(w, device=device), indexing="ij")
    r, c = r.reshape(-1), c.reshape(-1)
    near = ((r[:, None] - r[None, :]).abs() <= radius) & ((c[:, None] - c[None, :]).abs() <= radius)
    return near.float()


def propagate_step(target: torch.Tensor, sources: torch.Tensor, segs: torch.Tensor, mask: torch.Tensor | None,
                   cfg: PropagationCfg, chunk: int = 1 << 24) -> torch.Tensor:
    """Soft labels [C, N] of a target frame from its context.

    target [N, d] and sources [M, N, d] are L2-normalised features, segs [M, C, N] the context's labels.
    For each target patch, aff = exp(cos / T) to every context patch (× the neighbourhood mask), entries
    below the top-k value over all M·N context patches set to 0, the rest normalised to sum 1; the
    result is segs · aff. Computed in chunks of target patches (same numbers, bounded memory).
    """
    m, n, _ = sources.shape
    c = segs.shape[1]
    flat = segs.permute(1, 0, 2).reshape(c, m * n)  # [C, M·N], index m·N + n
    out = torch.empty(c, target.shape[0], device=target.device, dtype=segs.dtype)
    rows = max(1, chunk // (m * n))
    for a in range(0, target.shape[0], rows):
        b = min(a + rows, target.shape[0])
        aff = torch.exp(torch.einsum("td,mnd->tmn", target[a:b], sources) / cfg.temperature)
        if mask is not None:
            aff = aff * mask[a:b, None, :]
        aff = aff.reshape(b - a, m * n)
        kth = aff.topk(min(cfg.topk, m * n), dim=1).values[:, -1:]
        aff = torch.where(aff < kth, torch.zeros((), dtype=aff.dtype, device=aff.device), aff)
        aff = aff / aff.sum(dim=1, keepdim=True)
        out[:, a:b] = flat @ aff.T
    return out


def propagate(first: torch.Tensor, feats: Iterable[torch.Tensor], cfg: PropagationCfg) -> Iterator[torch.Tensor]:
    """Soft labels [C, h, w] of frames 1, 2, ... from frame 0's one-hot labels `first` [C, h, w] and the
    patch features [h·w, d] of frames 0, 1, 2, ... (`feats`, in order). Context of frame t: frame 0 and the
    `n_last` previous frames with their soft predictions."""
    c, h, w = first.shape
    it = iter(feats)
    f0 = F.normalize(next(it).float(), dim=1)
    mask = neighbourhood(h, w, cfg.radius, f0.device) if cfg.radius > 0 else None
    first_flat = first.reshape(c, h * w).to(f0.device)
    queue: deque[tuple[torch.Tensor, torch.Tensor]] = deque(maxlen=cfg.n_last)
    for feat in it:
        target = F.normalize(feat.float(), dim=1)
        sources = torch.stack([f0] + [q[0] for q in queue])
        segs = torch.stack([first_flat] + [q[1] for q in queue])
        seg = propagate_step(target, sources, segs, mask, cfg)
        queue.append((target, seg))
        yield seg.reshape(c, h, w)


def to_labels(seg: torch.Tensor, patch: int, size: tuple[int, int]) -> np.ndarray:
    """Label map [H, W] uint8 at the frame's original `size` (h, w): bilinear ×patch, per-label min-max
    normalisation, argmax, nearest resize."""
    up = F.interpolate(seg[None].float(), scale_factor=patch, mode="bilinear", align_corners=False)[0]
    lo = up.amin(dim=(1, 2), keepdim=True)
    hi = up.amax(dim=(1, 2), keepdim=True)
    span = hi - lo
    # DINO normalises labels whose max is > 0 (a constant one would divide by 0: left as zeros here)
    norm = torch.where((hi > 0) & (span > 0), (up - lo) / span.clamp_min(1e-30), torch.where(hi > 0, 0.0, up))
    labels = norm.argmax(dim=0).to(torch.uint8).cpu().numpy()
    return np.array(Image.fromarray(labels).resize((size[1], size[0]), Image.NEAREST))
