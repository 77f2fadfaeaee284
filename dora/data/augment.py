"""Augmentation parameters of one clip, drawn on the host from a seed (DINO recipe on a pre-crop).

Both loader back-ends (DALI on GPU/CPU, torchvision on CPU) apply exactly these parameters, so
they share semantics and a clip's views depend only on (seed, rank, position), never on workers,
batch composition or timing: that is what makes resume exact.

Geometry (appendix B.2; official table in docs/DEVIATIONS.md): a RandomResizedCrop pre-crop of the
frame (scale 0.2-1), seen as a precrop_size square; global crops (scale 0.4-1, flip) and local
crops (scale 0.05-0.4, flip unless data.local_flip is false, as in the official code) are taken
inside it; flips are drawn either way, so that switch changes nothing else. All crops are composed
into one box in source pixels, so each view is a single resample of the stored frame.
DoRA⋆ images (`pixels=True`, appendix D, DINO's recipe): no square; the crops are drawn in the pixels
of the image (of the pre-crop box, if data.precrop_scale is not [1, 1]), as torchvision's
RandomResizedCrop does, so their aspect ratios lie in 3/4-4/3 in pixels.
Photometry (DINO): colour jitter (0.4, 0.4, 0.2, 0.1) with p 0.8 applied in a fixed order
(brightness, contrast, saturation, hue), grayscale p 0.2, Gaussian blur sigma 0.1-2 with
probabilities data.global_blur_p per global view (DINO: 1.0, 0.1) and data.local_blur_p (0.5),
solarisation with data.global_solarize_p (DINO: 0.0, 0.2).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from dora.config import DataCfg

JITTER = (0.4, 0.4, 0.2, 0.1)


@dataclass
class ClipParams:
    """Per clip; T frames, V global views, m local crops. Boxes are (x0, y0, x1, y1) in source pixels."""

    global_box: np.ndarray  # [T, V, 4]
    global_flip: np.ndarray  # [T, V] bool
    local_box: np.ndarray  # [T, m, 4]
    local_flip: np.ndarray  # [T, m] bool
    color: np.ndarray  # [T, V + m, 4] brightness, contrast, saturation factors, hue shift (turns)
    blur: np.ndarray  # [T, V + m] sigma, 0 = no blur
    solarize: np.ndarray  # [T, V + m] bool


def blur_window(sigma: float) -> int:
    """Gaussian blur window for sigma (1 = no blur), the same in both loader back-ends."""
    return 2 * math.ceil(3 * sigma) + 1 if sigma > 0 else 1


def clip_rng(seed: int, rank: int, position: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64([seed, rank, position]))


def random_resized_crop(rng: np.random.Generator, width: float, height: float, scale: tuple[float, float],
                        ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> np.ndarray:
    """torchvision's RandomResizedCrop box (x0, y0, x1, y1): 10 tries at a random area and aspect,
    else the largest central crop within the ratio range."""
    area = width * height
    log_r = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(*log_r))
        w, h = math.sqrt(target * aspect), math.sqrt(target / aspect)
        if 0 < w <= width and 0 < h <= height:
            x, y = rng.uniform(0, width - w), rng.uniform(0, height - h)
            return np.array([x, y, x + w, y + h])
    in_ratio = width / height
    if in_ratio < ratio[0]:
        w, h = width, width / ratio[0]
    elif in_ratio > ratio[1]:
        w, h = height * ratio[1], height
    else:
        w, h = width, height
    x, y = (width - w) / 2, (height - h) / 2
    return np.array([x, y, x + w, y + h])


def _inside(outer: np.ndarray, inner: np.ndarray, canvas: tuple[float, float]) -> np.ndarray:
    """Box `inner`, drawn on a canvas (width, height) standing for `outer`, in the coordinates of `outer`'s frame."""
    sx, sy = (outer[2] - outer[0]) / canvas[0], (outer[3] - outer[1]) / canvas[1]
    return np.array([outer[0] + inner[0] * sx, outer[1] + inner[1] * sy, outer[0] + inner[2] * sx,
                     outer[1] + inner[3] * sy])


def _photometric(rng: np.random.Generator, blur_p: float, solarize_p: float) -> tuple[np.ndarray, float, bool]:
    b, c, s, h = 1.0, 1.0, 1.0, 0.0
    if rng.random() < 0.8:
        b = rng.uniform(1 - JITTER[0], 1 + JITTER[0])
        c = rng.uniform(1 - JITTER[1], 1 + JITTER[1])
        s = rng.uniform(1 - JITTER[2], 1 + JITTER[2])
        h = rng.uniform(-JITTER[3], JITTER[3])
    if rng.random() < 0.2:
        s = 0.0  # grayscale
    sigma = rng.uniform(0.1, 2.0) if rng.random() < blur_p else 0.0
    return np.array([b, c, s, h]), sigma, bool(rng.random() < solarize_p)


def draw_clip(rng: np.random.Generator, frame_size: tuple[int, int], t: int, views: int, cfg: DataCfg,
              pixels: bool = False) -> ClipParams:
    """All augmentation parameters of one clip of t frames of size (width, height).

    Video (official DoRA): crops are drawn on the pre-crop seen as a precrop_size square. `pixels`
    (DoRA⋆ images): crops are drawn in the pixels of the pre-crop box, which is the whole image when
    data.precrop_scale is [1, 1] (DINO: RandomResizedCrop of the image itself)."""
    w, h = frame_size
    m = cfg.local_crops

    def precrop() -> np.ndarray:
        if pixels and tuple(cfg.precrop_scale) == (1.0, 1.0):
            return np.array([0.0, 0.0, float(w), float(h)])
        return random_resized_crop(rng, w, h, cfg.precrop_scale)

    pre = [precrop()] * t if cfg.precrop_per_clip else [precrop() for _ in range(t)]
    side = float(cfg.precrop_size)
    # the canvas the crops are drawn on: a square (video) or the first pre-crop's pixels (images, t = 1)
    canvas = (pre[0][2] - pre[0][0], pre[0][3] - pre[0][1]) if pixels else (side, side)
    gboxes = [random_resized_crop(rng, *canvas, cfg.global_scale) for _ in range(views)]
    gflip = rng.random(views) < 0.5
    global_box = np.stack([[_inside(pre[f], gboxes[v], canvas) for v in range(views)] for f in range(t)])
    if cfg.local_per_frame:
        lboxes = [[random_resized_crop(rng, *canvas, cfg.local_scale) for _ in range(m)] for _ in range(t)]
        lflip = rng.random((t, m)) < 0.5
    else:
        one = [random_resized_crop(rng, *canvas, cfg.local_scale) for _ in range(m)]
        lboxes, lflip = [one] * t, np.repeat((rng.random(m) < 0.5)[None], t, 0)
    lflip = lflip & cfg.local_flip
    local_box = np.stack([[_inside(pre[f], lboxes[f][j], canvas) for j in range(m)]
                          for f in range(t)]).reshape(t, m, 4)
    color = np.zeros((t, views + m, 4))
    blur = np.zeros((t, views + m))
    sol = np.zeros((t, views + m), bool)
    frames = range(t) if cfg.color_per_frame else [0]
    for f in frames:
        for j in range(views + m):
            bp = cfg.global_blur_p[j] if j < views else cfg.local_blur_p
            sp = cfg.global_solarize_p[j] if j < views else 0.0
            color[f, j], blur[f, j], sol[f, j] = _photometric(rng, bp, sp)
    if not cfg.color_per_frame:
        color[:], blur[:], sol[:] = color[0], blur[0], sol[0]
    return ClipParams(global_box, np.repeat(gflip[None], t, 0), local_box, lflip, color, blur, sol)
