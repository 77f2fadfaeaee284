"""DAVIS-2017 semi-supervised scoring, written from the definitions of davis2017-evaluation
(Pont-Tuset et al., 2017; the package is not on PyPI).

Per object and frame: region similarity J (the Jaccard index of the object's masks) and the boundary
measure F (F1 of boundary precision/recall, a boundary pixel matching when the other boundary lies within
a disk of radius ceil(bound_th * image diagonal)). The first and the last frame are excluded, and their
result PNGs are never read (the first is the given annotation). Void (255) annotation pixels count as
background: the reference's semi-supervised task passes no void mask to J and F. Per object:
Mean, Recall (fraction of frames > 0.5) and Decay (mean of the first quarter of frames minus the last
quarter). The global numbers average the per-object ones; J&F-Mean is (J-Mean + F-Mean) / 2.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from dora.eval.davis_data import Sequence, read_labels
from pipeline.errors import InputError

VOID = 255
BOUND_TH = 0.008


def jaccard(gt: np.ndarray, seg: np.ndarray) -> float:
    """J = |gt ∩ seg| / |gt ∪ seg| for two binary masks; 1 when both are empty."""
    gt, seg = gt.astype(bool), seg.astype(bool)
    union = np.count_nonzero(gt | seg)
    return 1.0 if union == 0 else np.count_nonzero(gt & seg) / union


def boundary_map(mask: np.ndarray) -> np.ndarray:
    """One-pixel boundaries of a binary mask, offset half a pixel towards the origin (Martin et al.'s
    seg2bmap): a pixel is on the boundary when it differs from its east, south or south-east neighbour;
    the last row compares only east, the last column only south, the last pixel is never a boundary."""
    seg = mask.astype(bool)
    east, south, southeast = np.zeros_like(seg), np.zeros_like(seg), np.zeros_like(seg)
    east[:, :-1] = seg[:, 1:]
    south[:-1, :] = seg[1:, :]
    southeast[:-1, :-1] = seg[1:, 1:]
    b = (seg ^ east) | (seg ^ south) | (seg ^ southeast)
    b[-1, :] = seg[-1, :] ^ east[-1, :]
    b[:, -1] = seg[:, -1] ^ south[:, -1]
    b[-1, -1] = False
    return b


def disk(radius: float) -> np.ndarray:
    """skimage.morphology.disk(radius), the reference's structuring element: {x² + y² ≤ r²} over the grid
    np.arange(-r, r + 1) on each axis. A fractional r (a --bound-th ≥ 1 that is not whole) thus gives
    half-offset coordinates and an even-sized kernel, which cv2.dilate anchors at its centre: the
    reference's F for such values, reproduced."""
    grid = np.arange(-radius, radius + 1)
    x, y = np.meshgrid(grid, grid)
    return (x * x + y * y <= radius * radius).astype(np.uint8)


def bound_pixels(shape: tuple[int, int], bound_th: float = BOUND_TH) -> float:
    """The matching tolerance in pixels: bound_th itself when ≥ 1, else ceil(bound_th × diagonal)."""
    return bound_th if bound_th >= 1 else float(np.ceil(bound_th * np.linalg.norm(shape)))


def f_measure(seg: np.ndarray, gt: np.ndarray, bound_th: float = BOUND_TH) -> float:
    """Boundary F: precision = seg-boundary pixels within the tolerance of gt's boundary / all seg-boundary
    pixels, recall the other way round, F = 2PR / (P + R). An empty boundary on one side gives P or R = 0
    and 1 on the other; both empty gives F = 1."""
    kernel = disk(bound_pixels(seg.shape, bound_th))
    fg_b, gt_b = boundary_map(seg), boundary_map(gt)
    fg_dil = cv2.dilate(fg_b.astype(np.uint8), kernel).astype(bool)
    gt_dil = cv2.dilate(gt_b.astype(np.uint8), kernel).astype(bool)
    n_fg, n_gt = int(fg_b.sum()), int(gt_b.sum())
    if n_fg == 0 and n_gt == 0:
        precision = recall = 1.0
    elif n_fg == 0:
        precision, recall = 1.0, 0.0
    elif n_gt == 0:
        precision, recall = 0.0, 1.0
    else:
        precision = np.count_nonzero(fg_b & gt_dil) / n_fg
        recall = np.count_nonzero(gt_b & fg_dil) / n_gt
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


def statistics(values: np.ndarray) -> tuple[float, float, float]:
    """Mean, Recall (share of frames > 0.5) and Decay of per-frame values: the frames are split at
    round(linspace(1, n, 5)) - 1 into 4 overlapping quarters; Decay = mean(first) - mean(last)."""
    values = np.asarray(values, dtype=np.float64)
    mean = float(np.nanmean(values))
    recall = float(np.nanmean(values > 0.5))
    # the reference casts these indices to uint8 (wrong past 255 frames); plain ints here
    ids = (np.round(np.linspace(1, len(values), 5) + 1e-10) - 1).astype(int)
    bins = [values[ids[i]:ids[i + 1] + 1] for i in range(4)]
    decay = float(np.nanmean(bins[0]) - np.nanmean(bins[3]))
    return mean, recall, decay


def score_sequence(gt: np.ndarray, res: np.ndarray, bound_th: float = BOUND_TH) -> tuple[np.ndarray, np.ndarray]:
    """J and F [objects, frames] of label maps res vs gt (both [T, H, W]); frames 0 and T-1 excluded
    (res[0] and res[-1] are never looked at).

    Objects are 1..max(gt[0]); void (255) in gt counts as background, as in davis2017-evaluation's
    semi-supervised task (no void mask). A result label above the number of objects is an InputError.
    """
    gt = np.where(gt == VOID, 0, gt)
    n_obj = int(gt[0].max())
    gt, res = gt[1:-1], res[1:-1]
    if int(res.max(initial=0)) > n_obj:
        raise InputError(f"result label {int(res.max())} is above the sequence's {n_obj} objects")
    j = np.zeros((n_obj, len(gt)))
    f = np.zeros((n_obj, len(gt)))
    for o in range(n_obj):
        for t in range(len(gt)):
            g, s = gt[t] == o + 1, res[t] == o + 1
            j[o, t] = jaccard(g, s)
            f[o, t] = f_measure(s, g, bound_th)
    return j, f


def check_scorable(sequences: list[Sequence], hint: str = "") -> None:
    """InputError unless every sequence can be scored: one annotation per frame (DAVIS-2017 train/val)
    and at least 3 frames (the first and last are excluded); `hint` ends the message."""
    for seq in sequences:
        if len(seq.annotations) != len(seq.frames):
            raise InputError(f"{seq.root}: {len(seq.annotations)} annotations for {len(seq.frames)} frames; "
                             f"scoring needs one annotation per frame (DAVIS-2017 train/val){hint}")
        if len(seq.frames) < 3:
            raise InputError(f"{seq.root}: {len(seq.frames)} frames; scoring excludes the first and last, "
                             f"so a sequence needs at least 3{hint}")


def score_results(sequences: list[Sequence], results: Path, bound_th: float = BOUND_TH) -> dict:
    """davis2017-evaluation's global table and per-object J/F means for result PNGs in
    RESULTS/<sequence>/<frame>.png (indexed or grey label maps). As the reference, only frames 1..T-2
    are read: the first and last frame's PNGs may be absent."""
    jm, jr, jd, fm, fr, fd = [], [], [], [], [], []
    per_object: dict[str, dict[str, float]] = {}
    check_scorable(sequences)
    for seq in sequences:
        gt = np.stack([read_labels(p) for p in seq.annotations])
        res_paths = [Path(results) / seq.name / f"{p.stem}.png" for p in seq.annotations[1:-1]]
        missing = [p for p in res_paths if not p.exists()]
        if missing:
            raise InputError(f"{missing[0]}: result missing ({len(missing)} of {len(res_paths)} scored in "
                             f"{seq.name}); results need one PNG per annotated frame but the first and last, "
                             "named like the annotation")
        res = np.zeros_like(gt)  # frames 0 and T-1 stay unread, as in the reference
        res[1:-1] = np.stack([read_labels(p, like=gt.shape[1:]) for p in res_paths])
        n_obj = int(np.where(gt[0] == VOID, 0, gt[0]).max())
        if int(res.max()) > n_obj:
            raise InputError(f"{Path(results) / seq.name}: a result label ({int(res.max())}) is above the "
                             f"{n_obj} objects of the first annotation; results must use the annotation's "
                             "object ids (frames 1..T-2 are scored)")
        j, f = score_sequence(gt, res, bound_th)
        for o in range(j.shape[0]):
            m_j, r_j, d_j = statistics(j[o])
            m_f, r_f, d_f = statistics(f[o])
            jm.append(m_j), jr.append(r_j), jd.append(d_j), fm.append(m_f), fr.append(r_f), fd.append(d_f)
            per_object[f"{seq.name}_{o + 1}"] = {"J-Mean": m_j, "F-Mean": m_f, "J-Recall": r_j, "F-Recall": r_f,
                                                 "J-Decay": d_j, "F-Decay": d_f}
    if not per_object:
        raise InputError("no objects to score: the first annotations hold no object labels")

    def avg(x: list[float]) -> float:
        return float(np.mean(x))

    return {"J&F-Mean": (avg(jm) + avg(fm)) / 2, "J-Mean": avg(jm), "J-Recall": avg(jr), "J-Decay": avg(jd),
            "F-Mean": avg(fm), "F-Recall": avg(fr), "F-Decay": avg(fd), "n_objects": len(per_object),
            "n_sequences": len(sequences), "per_object": per_object}
