"""Unsupervised object discovery scores (the paper's Table 5b): CorLoc of one box per image, and the
Jaccard similarity of [CLS]-attention masks with the VOC 2012 segmentation.

CorLoc: a predicted box is correct when its IoU with any ground-truth box is ≥ 0.5 (LOST's IoU).
Attention masks keep the most-attended patches until a given share of the attention mass is reached:
`mean80` (the paper: the head-averaged last-layer [CLS] attention, 80 % of the mass, one mask, compared
with the foreground) or `heads60` (DINO's: each head's map, 60 % of the mass; per ground-truth class the
best head, averaged over the image's classes). Void (255) pixels count in neither intersection nor union.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from pipeline.files import save_image_atomic

VOID = 255
MASK_MODES = {"mean80": ("mean", 0.8), "heads60": ("heads", 0.6)}
GT_COLOUR, HIT_COLOUR, MISS_COLOUR = (40, 220, 40), (250, 220, 0), (230, 30, 30)
LEGEND = [(GT_COLOUR, "ground truth"), (HIT_COLOUR, "prediction, correct (IoU >= 0.5 with a true box)"),
          (MISS_COLOUR, "prediction, wrong")]


def box_iou(box: np.ndarray, boxes: np.ndarray, eps: float = 1e-7) -> np.ndarray:
    """IoU of `box` [4] with each of `boxes` [n, 4] (x1, y1, x2, y2), with LOST's ε on heights and union."""
    box, boxes = np.asarray(box, np.float64), np.asarray(boxes, np.float64).reshape(-1, 4)
    iw = (np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0])).clip(0)
    ih = (np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1])).clip(0)
    inter = iw * ih
    area1 = (box[2] - box[0]) * (box[3] - box[1] + eps)
    area2 = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1] + eps)
    return inter / (area1 + area2 - inter + eps)


def corloc_hit(pred: np.ndarray, gts: np.ndarray, threshold: float = 0.5) -> bool:
    return bool(np.any(box_iou(pred, gts) >= threshold))


def keep_mass(attn: torch.Tensor, keep: float) -> torch.Tensor:
    """Bool [m, n]: per row, the largest entries whose total reaches `keep` of the row's mass (DINO's
    visualize_attention thresholding: ascending cumulative share > 1 - keep)."""
    val, idx = torch.sort(attn.float(), dim=1)
    val = val / val.sum(dim=1, keepdim=True)
    kept_sorted = torch.cumsum(val, dim=1) > (1 - keep)
    return torch.zeros_like(kept_sorted).scatter(1, idx, kept_sorted)


def attention_masks(cls_attn: torch.Tensor, mode: str) -> torch.Tensor:
    """Masks [m, n] from the [CLS] attention [heads, n]: one (mean80) or one per head (heads60)."""
    how, keep = MASK_MODES[mode]
    attn = cls_attn.mean(dim=0, keepdim=True) if how == "mean" else cls_attn
    return keep_mass(attn, keep)


def masked_jaccard(pred: np.ndarray, gt: np.ndarray, valid: np.ndarray) -> float:
    union = np.count_nonzero((pred | gt) & valid)
    return 1.0 if union == 0 else np.count_nonzero(pred & gt & valid) / union


def jaccard_image(masks: np.ndarray, labels: np.ndarray, mode: str) -> float | None:
    """Jaccard of masks [m, H, W] with the class labels [H, W] (0 background, 255 void); None when the
    image has no object pixel."""
    valid = labels != VOID
    classes = [c for c in np.unique(labels) if c not in (0, VOID)]
    if not classes:
        return None
    if mode == "mean80":
        return masked_jaccard(masks[0], (labels > 0) & valid, valid)
    return float(np.mean([max(masked_jaccard(m, labels == c, valid) for m in masks) for c in classes]))


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: the fixed bitmap font
        return ImageFont.load_default()


def draw_legend(width: int, height: int = 30) -> Image.Image:
    """A white band naming the sheet's colours: a swatch and its meaning for each of LEGEND."""
    font = _font(14)
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    need = sum(22 + int(probe.textlength(text, font=font)) + 18 for _, text in LEGEND) + 8
    band = Image.new("RGB", (max(width, need), height), (255, 255, 255))
    d = ImageDraw.Draw(band)
    x = 8
    for colour, text in LEGEND:
        d.rectangle([x, height // 2 - 7, x + 14, height // 2 + 7], fill=colour, outline=(0, 0, 0))
        d.text((x + 22, height // 2), text, fill=(0, 0, 0), font=font, anchor="lm")
        x += 22 + int(d.textlength(text, font=font)) + 18
    return band


def draw_sheet(items: list[tuple[Path, np.ndarray, np.ndarray, bool]], path: Path, tile_h: int = 160,
               cols: int = 4) -> Path:
    """PNG grid of images with their true boxes (green) and the predicted box (yellow: correct, red: wrong),
    and a legend band below naming the colours."""
    tiles = []
    for img_path, pred, gts, ok in items:
        with Image.open(img_path) as im:
            im = im.convert("RGB")
        s = tile_h / im.height
        im = im.resize((max(1, round(im.width * s)), tile_h), Image.BILINEAR)
        d = ImageDraw.Draw(im)
        for g in gts:
            d.rectangle([float(v) * s for v in g], outline=GT_COLOUR, width=2)
        d.rectangle([float(v) * s for v in pred], outline=HIT_COLOUR if ok else MISS_COLOUR, width=3)
        tiles.append(im)
    width = max(t.width for t in tiles)
    rows = (len(tiles) + cols - 1) // cols
    legend = draw_legend(cols * width)
    sheet = Image.new("RGB", (legend.width, rows * tile_h + legend.height), (255, 255, 255))
    for i, t in enumerate(tiles):
        sheet.paste(t, ((i % cols) * width, (i // cols) * tile_h))
    sheet.paste(legend, (0, rows * tile_h))
    save_image_atomic(path, sheet)
    return path
