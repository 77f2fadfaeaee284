"""Generated evaluation inputs with known answers: a tiny ViT checkpoint, a DAVIS-layout sequence of a
moving square with its true masks, a Pascal VOC folder of images with known boxes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from dora.checkpoint import save_atomic
from dora.eval.davis_data import voc_palette

RED, BLUE, GREEN = (230, 20, 20), (20, 20, 230), (20, 200, 20)


def tiny_checkpoint(path: Path, depth: int = 2, seed: int = 0) -> Path:
    """An official-DINO-style file ({"teacher": {"backbone.*": ...}}) of a random ViT-Tiny/16 of `depth` blocks."""
    import timm

    torch.manual_seed(seed)
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0, depth=depth)
    save_atomic({"teacher": {f"backbone.{k}": v for k, v in model.state_dict().items()}}, path)
    return path


def square_frames(n: int, h: int, w: int, side: int, step: int, y0: int = 8, x0: int = 8):
    """n RGB frames [h, w, 3] of a red square (side px) moving `step` px right per frame on blue, and
    its label maps [h, w] (1 = square)."""
    frames, labels = [], []
    for t in range(n):
        img = np.empty((h, w, 3), np.uint8)
        img[:] = BLUE
        lab = np.zeros((h, w), np.uint8)
        x = x0 + t * step
        img[y0:y0 + side, x:x + side] = RED
        lab[y0:y0 + side, x:x + side] = 1
        frames.append(img)
        labels.append(lab)
    return frames, labels


def write_davis(root: Path, name: str, frames, labels, split: str = "val") -> Path:
    """ROOT in the DAVIS-2017 layout with one sequence (JPEG frames, indexed PNG annotations)."""
    jpg = root / "JPEGImages" / "480p" / name
    ann = root / "Annotations" / "480p" / name
    jpg.mkdir(parents=True, exist_ok=True)
    ann.mkdir(parents=True, exist_ok=True)
    for t, (img, lab) in enumerate(zip(frames, labels, strict=True)):
        Image.fromarray(img).save(jpg / f"{t:05d}.jpg", quality=95)
        im = Image.fromarray(lab, mode="P")
        im.putpalette(voc_palette().ravel().tolist())
        im.save(ann / f"{t:05d}.png")
    sets = root / "ImageSets" / "2017"
    sets.mkdir(parents=True, exist_ok=True)
    with open(sets / f"{split}.txt", "a") as f:
        f.write(name + "\n")
    return root
