"""Pictures of tracking: each frame of a clip with its k object maps overlaid (like the paper's Fig. 4)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

from dora.data import denormalize

COLORS = np.array([[0, 90, 255], [255, 40, 40], [40, 220, 40], [255, 200, 0], [220, 0, 220], [0, 220, 220],
                   [255, 128, 0], [128, 0, 255]], np.float32) / 255


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """[3, H, W] ImageNet-normalised tensor -> uint8 HxWx3."""
    img = denormalize(x.detach().float().cpu()).clamp(0, 1)
    return (img.permute(1, 2, 0).numpy() * 255).astype(np.uint8)


def overlay(frame: np.ndarray, maps: torch.Tensor, grid: tuple[int, int], alpha: float = 0.6) -> np.ndarray:
    """Blend k maps [k, n] (each scaled to its max) in distinct colours over an HxWx3 frame."""
    h, w = frame.shape[:2]
    m = maps.detach().float().cpu()
    m = m / m.amax(-1, keepdim=True).clamp_min(1e-12)
    up = F.interpolate(m.reshape(1, -1, *grid), size=(h, w), mode="bilinear", align_corners=False)[0].numpy()
    color = np.einsum("khw,kc->hwc", up, COLORS[np.arange(len(up)) % len(COLORS)])
    strength = np.clip(up.max(0), 0, 1)[..., None] * alpha
    out = frame.astype(np.float32) / 255 * (1 - strength) + np.clip(color, 0, 1) * strength
    return (out * 255).astype(np.uint8)


def tracking_sheet(frames: torch.Tensor, maps: torch.Tensor, grid: tuple[int, int], path: Path,
                   title: str = "") -> Path:
    """PNG: top row the T frames, bottom row the same frames with the k tracked maps.

    frames [T, 3, H, W] (normalised); maps [T, k, n].
    """
    tiles = [to_uint8(f) for f in frames]
    over = [overlay(img, maps[t], grid) for t, img in enumerate(tiles)]
    h, w = tiles[0].shape[:2]
    label = 16 if title else 0
    sheet = Image.new("RGB", (w * len(tiles), 2 * h + label), (20, 20, 20))
    for t, (a, b) in enumerate(zip(tiles, over, strict=True)):
        sheet.paste(Image.fromarray(a), (t * w, label))
        sheet.paste(Image.fromarray(b), (t * w, label + h))
    if title:
        ImageDraw.Draw(sheet).text((4, 2), title, fill=(240, 240, 160))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)
    return path
