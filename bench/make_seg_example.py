"""A small generated semantic-segmentation set in the ADE20K layout, for trying `dora-eval segment`.

OUT/ADEChallengeData2016/images/{training,validation}/ADE_{train,val}_%08d.jpg and
annotations/{training,validation}/*.png, as in ADE20K's SceneParsing release. Each image is a grid of
32 x 32 px cells (2 x 2 patches of a /16 ViT, on its patch grid); each cell is one of a few ADE20K classes
(annotation value = class index + 1), drawn as that class's own flat colour with a little noise, or, for
a few cells, "other" (annotation 0, ignored after reduce_zero_label) in grey. A frozen random ViT already
separates the colours, so a linear probe (`--crop` = the image size, which keeps the cells on the patch
grid when validation rescales) reaches a high mIoU: a check of the plumbing, not of a representation.

Usage: python bench/make_seg_example.py OUT [--train 24] [--val 8] [--size 64] [--cell 32] [--seed 0]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

# ADE20K annotation value (1-based) -> colour: wall, building, sky, floor, tree, road
CLASSES = {1: (200, 30, 30), 2: (30, 170, 40), 3: (40, 70, 220), 4: (230, 210, 30), 5: (190, 40, 200),
           7: (20, 200, 200)}
OTHER = (128, 128, 128)
CELL = 32


def make_example(out: Path, n_train: int = 24, n_val: int = 8, size: int = 64, seed: int = 0,
                 other: float = 0.05, cell: int = CELL) -> Path:
    """Write the set under OUT (see the module doc); returns OUT/ADEChallengeData2016."""
    if size % cell:
        raise SystemExit(f"--size {size}: give a multiple of the cell size {cell}")
    rng = np.random.default_rng(seed)
    values = np.array(list(CLASSES))
    root = Path(out) / "ADEChallengeData2016"
    for split, tag, n in (("training", "train", n_train), ("validation", "val", n_val)):
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        (root / "annotations" / split).mkdir(parents=True, exist_ok=True)
        for i in range(1, n + 1):
            g = size // cell
            cells = rng.choice(values, size=(g, g))
            cells[rng.random((g, g)) < other] = 0
            lab = np.kron(cells, np.ones((cell, cell), np.int64)).astype(np.uint8)
            colour = np.array([CLASSES.get(int(v), OTHER) for v in lab.ravel()], np.float64).reshape(size, size, 3)
            img = np.clip(colour + rng.normal(0, 8, colour.shape), 0, 255).astype(np.uint8)
            name = f"ADE_{tag}_{i:08d}"
            Image.fromarray(img).save(root / "images" / split / f"{name}.jpg", quality=95)
            Image.fromarray(lab, mode="L").save(root / "annotations" / split / f"{name}.png")
    return root


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--train", type=int, default=24)
    ap.add_argument("--val", type=int, default=8)
    ap.add_argument("--size", type=int, default=64, help="Image side in px (a multiple of --cell).")
    ap.add_argument("--cell", type=int, default=CELL, help="Side of a one-class cell in px.")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    root = make_example(a.out, a.train, a.val, a.size, a.seed, cell=a.cell)
    print(f"wrote {a.train} training and {a.val} validation images to {root}")


if __name__ == "__main__":
    main()
