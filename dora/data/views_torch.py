"""The augmentations of dora.augment in plain torch (the CPU path; DALI's twin is dora/data/views_dali.py).

Both paths use the same operation definitions, taken from DALI's documented formulas:
  crop+resize  one antialiased bilinear resample of the box to the view size
  brightness/contrast  out = b * (0.5 + c * (x - 0.5))              (fn.brightness_contrast)
  hue/saturation       a linear map in YIQ: hue rotates I/Q, saturation scales them (fn.hsv)
  blur         Gaussian, window 2*ceil(3 sigma)+1, reflect borders  (fn.gaussian_blur)
  solarise     x >= 0.5 -> 1 - x
  normalise    ImageNet mean/std, then the horizontal flip           (fn.crop_mirror_normalize)
Values are clamped to [0, 1] after each colour step, as torchvision does.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from dora.data.augment import ClipParams, blur_window
from dora.data.normalization import normalize

RGB2YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
YIQ2RGB = torch.linalg.inv(RGB2YIQ)


def crop_resize(img: torch.Tensor, box: np.ndarray, size: int) -> torch.Tensor:
    """[3, H, W] uint8 -> [3, size, size] float in [0, 1]: the box (x0, y0, x1, y1), resampled once.

    Enlarging or shrinking by less than 2x: bilinear samples at the exact (fractional) positions
    DALI's resize uses. Shrinking more: the box rounded outwards to whole pixels (at most half a
    source pixel, a quarter of an output pixel), then an antialiased resize as DALI's.
    """
    _, h, w = img.shape
    if box[2] - box[0] < 2 * size or box[3] - box[1] < 2 * size:
        centers = (torch.arange(size, dtype=torch.float32) + 0.5) / size
        gx = 2 * (box[0] + centers * (box[2] - box[0])) / w - 1
        gy = 2 * (box[1] + centers * (box[3] - box[1])) / h - 1
        grid = torch.stack(torch.meshgrid(gy, gx, indexing="ij")[::-1], -1)[None]
        return F.grid_sample(img.float()[None] / 255, grid, mode="bilinear", padding_mode="border",
                             align_corners=False)[0]
    x0, y0 = max(0, int(math.floor(box[0]))), max(0, int(math.floor(box[1])))
    x1, y1 = min(w, max(x0 + 1, int(math.ceil(box[2])))), min(h, max(y0 + 1, int(math.ceil(box[3]))))
    crop = img[:, y0:y1, x0:x1].float()[None] / 255
    return F.interpolate(crop, size=(size, size), mode="bilinear", antialias=True, align_corners=False)[0]


def hue_saturation_matrix(hue_turns: float, saturation: float) -> torch.Tensor:
    """The RGB->RGB matrix of DALI's fn.hsv(hue=360*hue_turns, saturation)."""
    a = 2 * math.pi * hue_turns
    rot = torch.tensor([[1.0, 0.0, 0.0], [0.0, saturation * math.cos(a), saturation * math.sin(a)],
                        [0.0, -saturation * math.sin(a), saturation * math.cos(a)]])
    return YIQ2RGB @ rot @ RGB2YIQ


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    if sigma <= 0:
        return x
    k = blur_window(sigma)
    r = torch.arange(k, dtype=torch.float32) - k // 2
    g = torch.exp(-(r ** 2) / (2 * sigma ** 2))
    g = (g / g.sum()).to(x.dtype)
    pad = min(k // 2, x.shape[-1] - 1, x.shape[-2] - 1)
    g = g[k // 2 - pad: k // 2 + pad + 1]
    y = F.pad(x[None], (pad, pad, 0, 0), mode="reflect")
    y = F.conv2d(y, g.view(1, 1, 1, -1).expand(3, 1, 1, -1), groups=3)
    y = F.pad(y, (0, 0, pad, pad), mode="reflect")
    return F.conv2d(y, g.view(1, 1, -1, 1).expand(3, 1, -1, 1), groups=3)[0]


def render(img: torch.Tensor, box: np.ndarray, flip: bool, color: np.ndarray, sigma: float, solarize: bool,
           size: int) -> torch.Tensor:
    """One view of one decoded frame, normalised: [3, size, size]."""
    x = crop_resize(img, box, size)
    b, c, s, h = (float(v) for v in color)
    x = (b * (0.5 + c * (x - 0.5))).clamp(0, 1)
    if s != 1.0 or h != 0.0:
        x = torch.einsum("ij,jhw->ihw", hue_saturation_matrix(h, s), x).clamp(0, 1)
    x = gaussian_blur(x, sigma)
    if solarize:
        x = torch.where(x >= 0.5, 1 - x, x)
    x = normalize(x[None])
    return (x.flip(-1) if flip else x)[0]


def render_clip(frames: list[torch.Tensor], p: ClipParams, views: int, global_size: int,
                local_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Decoded frames [T] of [3, H, W] uint8 -> (globals [T, V, 3, G, G], locals [T, m, 3, L, L])."""
    g = torch.stack([torch.stack([render(f, p.global_box[t, v], p.global_flip[t, v], p.color[t, v], p.blur[t, v],
                                         p.solarize[t, v], global_size) for v in range(views)])
                     for t, f in enumerate(frames)])
    m = p.local_box.shape[1]
    loc = [torch.stack([render(f, p.local_box[t, j], p.local_flip[t, j], p.color[t, views + j],
                               p.blur[t, views + j], p.solarize[t, views + j], local_size) for j in range(m)])
           for t, f in enumerate(frames)]
    return g, torch.stack(loc) if m else torch.zeros(len(frames), 0, 3, local_size, local_size)
