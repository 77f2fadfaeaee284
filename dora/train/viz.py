"""Pictures of tracking: each frame of a clip with its k object maps overlaid (like the paper's Fig. 4).

A sheet draws every frame at a readable size (at least `width` px wide), in bands of up to `PER_ROW`
frames: a strip with the frame's number (and time), the frame, then the frame with the maps. A legend
at the bottom names each object's colour. `teacher_frames` gives the un-augmented stored frames and
the teacher's input made from them, so the maps are drawn on what the video really shows.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont

from dora.data import denormalize, normalize
from pipeline.files import save_image_atomic

COLORS = np.array([[0, 90, 255], [255, 40, 40], [40, 220, 40], [255, 200, 0], [220, 0, 220], [0, 220, 220],
                   [255, 128, 0], [128, 0, 255]], np.float32) / 255
PER_ROW = 4  # frames per band
GAP, LABEL_H, TITLE_H, LEGEND_H, FONT = 6, 26, 50, 34, 17  # px
BACKGROUND, INK = (20, 20, 20), (240, 240, 200)


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """[3, H, W] ImageNet-normalised tensor -> uint8 HxWx3."""
    img = denormalize(x.detach().float().cpu()).clamp(0, 1)
    return (img.permute(1, 2, 0).numpy() * 255).astype(np.uint8)


def overlay(frame: np.ndarray, maps: torch.Tensor, grid: tuple[int, int], alpha: float = 0.6) -> np.ndarray:
    """k maps [k, n] (each scaled to its max) over an HxWx3 frame: each pixel takes the colour of its
    strongest object (so every colour is one of the legend's), blended by that object's scaled value."""
    h, w = frame.shape[:2]
    m = maps.detach().float().cpu()
    m = m / m.amax(-1, keepdim=True).clamp_min(1e-12)
    up = F.interpolate(m.reshape(1, -1, *grid), size=(h, w), mode="bilinear", align_corners=False)[0].numpy()
    color = COLORS[up.argmax(0) % len(COLORS)]
    strength = np.clip(up.max(0), 0, 1)[..., None] * alpha
    out = frame.astype(np.float32) / 255 * (1 - strength) + color * strength
    return (out * 255).astype(np.uint8)


def teacher_frames(jpegs: list[bytes], short_side: int, patch: int) -> tuple[list[np.ndarray], torch.Tensor]:
    """(the stored frames as uint8 HxWx3, the teacher's input [T, 3, H, W] made from them): each frame
    resized (bicubic) so that its short side is about `short_side` and both sides are multiples of
    `patch`, then ImageNet-normalised. No crop, no flip, no colour change. Raises OSError when a JPEG
    does not decode."""
    frames = []
    for data in jpegs:
        with Image.open(io.BytesIO(data)) as im:
            frames.append(im.convert("RGB"))
    w, h = frames[0].size
    scale = short_side / min(w, h)
    size = (max(patch, round(w * scale) // patch * patch), max(patch, round(h * scale) // patch * patch))
    x = torch.stack([torch.from_numpy(np.array(f.resize(size, Image.BICUBIC))).permute(2, 0, 1) for f in frames])
    return [np.asarray(f) for f in frames], normalize(x.float() / 255)


def font(size: int = FONT) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """Pillow's scalable default font at `size` px (Pillow >= 10.1), else matplotlib's DejaVu Sans."""
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow 10.0
        from matplotlib import font_manager

        return ImageFont.truetype(font_manager.findfont("DejaVu Sans"), size)


@dataclass(frozen=True)
class SheetLayout:
    """Where `tracking_sheet` draws n frames of w x h px: boxes are (left, top, right, bottom)."""

    n: int
    w: int
    h: int

    @classmethod
    def of(cls, n: int, frame_hw: tuple[int, int], width: int = 480) -> SheetLayout:
        """Frames of frame_hw = (H, W) drawn at their own width, but at least `width` and at most
        2 x `width` px wide (large photos), aspect kept."""
        fh, fw = frame_hw
        w = min(max(width, fw), 2 * width)
        return cls(n, w, max(1, round(fh * w / fw)))

    @property
    def band_h(self) -> int:
        return LABEL_H + 2 * self.h + 2 * GAP

    @property
    def size(self) -> tuple[int, int]:
        cols, rows = min(self.n, PER_ROW), -(-self.n // PER_ROW)
        return GAP + cols * (self.w + GAP), TITLE_H + rows * self.band_h + LEGEND_H

    def label(self, t: int) -> tuple[int, int]:
        r, c = divmod(t, PER_ROW)
        return GAP + c * (self.w + GAP), TITLE_H + r * self.band_h

    def frame(self, t: int) -> tuple[int, int, int, int]:
        """The box of frame t as stored."""
        x, y = self.label(t)
        return x, y + LABEL_H, x + self.w, y + LABEL_H + self.h

    def maps(self, t: int) -> tuple[int, int, int, int]:
        """The box of frame t with its maps."""
        x, y0, x1, y1 = self.frame(t)
        return x, y1 + GAP, x1, y1 + GAP + self.h


def _fit(draw: ImageDraw.ImageDraw, text: str, width: int, lines: int, f) -> list[str]:
    """`text` wrapped at spaces into at most `lines` lines of `width` px (the rest elided with ...)."""
    out, cur = [], ""
    for word in text.split(" "):
        if cur and draw.textlength(f"{cur} {word}", font=f) > width:
            out.append(cur)
            cur = word
        else:
            cur = f"{cur} {word}" if cur else word
    out.append(cur)
    if len(out) > lines:
        out = out[:lines]
        out[-1] += " ..."
    return out


def tracking_sheet(frames: list[np.ndarray] | torch.Tensor, maps: torch.Tensor, grid: tuple[int, int], path: Path,
                   title: str = "", times: list[float] | None = None, objects: list[str] | None = None,
                   width: int = 480) -> Path:
    """PNG: each of the T frames (`width` to 2 x `width` px wide) above the same frame with its k maps, in
    bands of `PER_ROW` frames, frame numbers (and times in s, from `times`) above each, and a legend of
    the object colours (`objects` names them; default "object 1".."object k").

    frames: uint8 HxWx3 images (e.g. `teacher_frames`' stored frames) or a normalised [T, 3, H, W]
    tensor; maps [T, k, n] on the teacher's patch grid (rows, cols), which covers the whole frame.
    """
    tiles = [to_uint8(f) for f in frames] if isinstance(frames, torch.Tensor) else [np.asarray(f) for f in frames]
    lay = SheetLayout.of(len(tiles), tiles[0].shape[:2], width)
    sheet = Image.new("RGB", lay.size, BACKGROUND)
    draw, f = ImageDraw.Draw(sheet), font()
    for t, tile in enumerate(tiles):
        big = np.asarray(Image.fromarray(tile).resize((lay.w, lay.h), Image.BICUBIC))
        sheet.paste(Image.fromarray(big), lay.frame(t)[:2])
        sheet.paste(Image.fromarray(overlay(big, maps[t], grid)), lay.maps(t)[:2])
        when = f"   t = {times[t]:.2f} s" if times is not None else ""
        x, y = lay.label(t)
        draw.text((x + 2, y + 4), f"frame {t + 1}{when}", fill=INK, font=f)
    for i, line in enumerate(_fit(draw, title, lay.size[0] - 2 * GAP, 2, f)):
        draw.text((GAP, 4 + i * (FONT + 6)), line, fill=INK, font=f)
    k = maps.shape[1]
    names = objects or [f"object {j + 1}" for j in range(k)]
    x, y = GAP, lay.size[1] - LEGEND_H + 8
    for j, name in enumerate(names):
        color = tuple(int(c) for c in COLORS[j % len(COLORS)] * 255)
        draw.rectangle((x, y, x + 16, y + 16), fill=color)
        draw.text((x + 22, y), name, fill=INK, font=f)
        x += 22 + int(draw.textlength(name, font=f)) + 18
    draw.text((x, y), "(each map scaled to its own max)", fill=(160, 160, 160), font=f)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image_atomic(path, sheet)
    return path
