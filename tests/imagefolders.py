"""Generated labelled image folders (ImageFolder layout) for the evaluation tests and benchmarks.

Each class is a coloured shape (disc, square, triangle, bar) of a class colour on a textured
background, drawn at a random place and size: a tiny ViT's features separate them, and the images
have the sizes and JPEG artefacts of real photos (non-square, odd sizes).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

SHAPES = ("disc", "square", "triangle", "bar")


def class_style(c: int) -> tuple[str, tuple[int, int, int]]:
    rng = np.random.default_rng(1000 + c)
    return SHAPES[c % len(SHAPES)], tuple(int(v) for v in rng.integers(30, 226, 3))


def draw(c: int, rng: np.random.Generator, size: tuple[int, int]) -> Image.Image:
    """One image of class c, width x height = size."""
    w, h = size
    bg = rng.integers(0, 60, (h // 8 + 1, w // 8 + 1, 3), dtype=np.uint8)
    img = Image.fromarray(bg).resize((w, h), Image.BILINEAR)
    shape, color = class_style(c)
    s = int(min(w, h) * rng.uniform(0.35, 0.7))
    x0, y0 = int(rng.integers(0, w - s + 1)), int(rng.integers(0, h - s + 1))
    d = ImageDraw.Draw(img)
    box = (x0, y0, x0 + s, y0 + s)
    if shape == "disc":
        d.ellipse(box, fill=color)
    elif shape == "square":
        d.rectangle(box, fill=color)
    elif shape == "triangle":
        d.polygon([(x0, y0 + s), (x0 + s, y0 + s), (x0 + s // 2, y0)], fill=color)
    else:
        d.rectangle((x0, y0 + s // 3, x0 + s, y0 + 2 * s // 3), fill=color)
    return img


def make_folder(root: Path, classes: int, train_per_class: int, val_per_class: int, seed: int = 0,
                size: tuple[int, int] = (80, 60), names: list[str] | None = None, ext: str = ".jpg") -> Path:
    """ROOT/train/<class>/*.jpg and ROOT/val/<class>/*.jpg; sizes vary around `size`."""
    rng = np.random.default_rng(seed)
    names = names or [f"class_{c:04d}" for c in range(classes)]
    for split, n in (("train", train_per_class), ("val", val_per_class)):
        for c in range(classes):
            folder = Path(root) / split / names[c]
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                wh = (int(size[0] * rng.uniform(0.8, 1.25)), int(size[1] * rng.uniform(0.8, 1.25)))
                img = draw(c, rng, wh)
                img.save(folder / f"{split}_{c}_{i:03d}{ext}", quality=90) if ext == ".jpg" else img.save(
                    folder / f"{split}_{c}_{i:03d}{ext}")
    return Path(root)
