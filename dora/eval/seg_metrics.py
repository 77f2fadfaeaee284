"""Semantic-segmentation scores exactly as mmsegmentation computes them (mmseg's IoUMetric).

Per image, pixels whose label is the ignore index (255) are dropped; over the rest, each class's
intersection (predicted and labelled c), prediction area, label area and union (pred + label -
intersection) are counted. These areas are summed over the whole set, and only then divided:

- IoU_c = intersect_c / union_c, Acc_c = intersect_c / label_c (NaN when the denominator is 0:
  a class absent from both labels and predictions has no IoU; a class only predicted has IoU 0 and no
  Acc);
- mIoU and mAcc are the NaN-ignoring means (numpy's nanmean) of those, aAcc = sum(intersect) /
  sum(label), all in % (mmseg multiplies by 100 and rounds to 2 decimals for display; we keep the
  unrounded values).

The areas are exact integer counts (mmseg uses float histograms, exact below 2^24 pixels per class and
image). A prediction or label outside [0, num_classes) that is not ignored is an error here (mmseg's
histogram silently drops it).
"""

from __future__ import annotations

import math

import numpy as np
import torch

IGNORE = 255


def intersect_and_union(pred: torch.Tensor, label: torch.Tensor, num_classes: int,
                        ignore_index: int = IGNORE) -> torch.Tensor:
    """[4, num_classes] int64: per-class intersection, union, prediction area and label area of one
    image (pred and label: integer maps of the same shape), ignoring pixels labelled `ignore_index`."""
    if pred.shape != label.shape:
        raise ValueError(f"prediction {tuple(pred.shape)} and label {tuple(label.shape)} differ in shape")
    keep = label != ignore_index
    p, t = pred[keep].long(), label[keep].long()
    if p.numel() and (int(p.min()) < 0 or int(p.max()) >= num_classes or int(t.min()) < 0
                      or int(t.max()) >= num_classes):
        raise ValueError(f"a class index outside [0, {num_classes}) that is not the ignore index {ignore_index}")
    area_i = torch.bincount(p[p == t], minlength=num_classes)
    area_p = torch.bincount(p, minlength=num_classes)
    area_l = torch.bincount(t, minlength=num_classes)
    return torch.stack([area_i, area_p + area_l - area_i, area_p, area_l]).cpu()


def scores(areas: torch.Tensor, class_names: list[str] | None = None) -> dict:
    """mIoU, mAcc and aAcc (in %) and the per-class IoU/Acc (in %, None where NaN) from the summed areas
    [4, C] of `intersect_and_union` (intersection, union, prediction, label)."""
    a = areas.double().numpy()
    inter, union, _, lab = a
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = inter / union
        acc = inter / lab
        all_acc = inter.sum() / lab.sum()
    names = class_names or [str(c) for c in range(len(inter))]
    valid = ~np.isnan(iou)
    return {
        "mIoU": _pct(np.nanmean(iou)) if valid.any() else None,
        "mAcc": _pct(np.nanmean(acc)) if (~np.isnan(acc)).any() else None,
        "aAcc": _pct(all_acc),
        "n_classes_scored": int(valid.sum()),
        "per_class": {names[c]: {"IoU": _pct(iou[c]), "Acc": _pct(acc[c]), "label_px": int(lab[c]),
                                 "pred_px": int(a[2][c])}
                      for c in range(len(inter)) if a[2][c] or lab[c]},
    }


def _pct(v: float) -> float | None:
    """100 v, or None for NaN (JSON has no NaN)."""
    return None if v is None or math.isnan(float(v)) else 100.0 * float(v)


class SegScores:
    """Running sums of `intersect_and_union` over a set of images."""

    def __init__(self, num_classes: int, ignore_index: int = IGNORE):
        self.num_classes, self.ignore_index = num_classes, ignore_index
        self.areas = torch.zeros(4, num_classes, dtype=torch.int64)

    def add(self, pred: torch.Tensor, label: torch.Tensor) -> None:
        """Count one image's prediction against its label map."""
        self.areas += intersect_and_union(pred, label, self.num_classes, self.ignore_index)

    def result(self, class_names: list[str] | None = None) -> dict:
        return scores(self.areas, class_names)
