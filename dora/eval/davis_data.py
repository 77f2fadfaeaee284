"""The DAVIS-2017 folder layout, its indexed-PNG annotations and their palette.

ROOT/JPEGImages/480p/<seq>/<frame>.jpg, ROOT/Annotations/480p/<seq>/<frame>.png (indexed PNG, label
0 = background, 1..n = objects, 255 = void), ROOT/ImageSets/2017/<split>.txt (one sequence per line).
The palette of the outputs is the input annotations' own (DINO downloads one from the internet).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from pipeline.errors import InputError
from pipeline.files import atomic_open


@dataclass
class Sequence:
    name: str
    root: Path  # the sequence's JPEG folder
    frames: list[Path]
    annotations: list[Path]  # one per frame in train/val; only the first in test-dev


def voc_palette(n: int = 256) -> np.ndarray:
    """The PASCAL VOC / DAVIS colour map [n, 3] (bits of the label spread over r, g, b, high bit first)."""
    pal = np.zeros((n, 3), dtype=np.uint8)
    for i in range(n):
        c, rgb = i, [0, 0, 0]
        for j in range(8):
            for ch in range(3):
                rgb[ch] |= ((c >> ch) & 1) << (7 - j)
            c >>= 3
        pal[i] = rgb
    return pal


def read_palette(path: Path) -> np.ndarray:
    """The [256, 3] palette of an indexed PNG; the VOC colour map for a grey-level label PNG."""
    with Image.open(path) as im:
        pal = im.getpalette() if im.mode == "P" else None
    if pal is None:
        return voc_palette()
    pal = np.asarray(pal, dtype=np.uint8).reshape(-1, 3)
    out = voc_palette()
    out[: len(pal)] = pal[:256]
    return out


def read_labels(path: Path, like: tuple[int, int] | None = None) -> np.ndarray:
    """The label map [H, W] uint8 of an indexed (or grey) PNG; `like` is the size it must have."""
    try:
        with Image.open(path) as im:
            if im.mode not in ("P", "L"):
                raise InputError(f"{path}: a {im.mode} image, not an indexed or grey label PNG")
            labels = np.array(im)
    except OSError as e:
        raise InputError(f"{path}: not a readable PNG ({e})") from None
    if like is not None and labels.shape != tuple(like):
        raise InputError(f"{path}: {labels.shape[1]}x{labels.shape[0]} but the annotation is "
                         f"{like[1]}x{like[0]}; results must have the annotations' size")
    return labels


def write_indexed(path: Path, labels: np.ndarray, palette: np.ndarray) -> None:
    """An indexed PNG of `labels` [H, W] with `palette` [256, 3], written atomically."""
    im = Image.fromarray(labels.astype(np.uint8), mode="P")
    im.putpalette(palette.astype(np.uint8).ravel().tolist())
    with atomic_open(path, "wb") as f:
        im.save(f, format="PNG")


def truncated_jpeg(path: Path, tail: int = 32) -> bool:
    """True for a JPEG file (it starts with the SOI marker FF D8) that lacks the end-of-image marker
    FF D9 in its last `tail` bytes: a file cut short. Entropy-coded data never holds FF D9 (an FF there
    is followed by 00 or a restart marker), so a cut anywhere past the header is seen."""
    with open(path, "rb") as f:
        if f.read(2) != b"\xff\xd8":
            return False  # not a JPEG: the decoder says so
        size = f.seek(0, 2)
        f.seek(max(0, size - tail))
        return b"\xff\xd9" not in f.read()


def read_split(root: Path, split: str, sequences: tuple[str, ...] = ()) -> list[str]:
    """The sequence names: `sequences` when given, else ROOT/ImageSets/2017/<split>.txt."""
    if sequences:
        return list(sequences)
    path = Path(root) / "ImageSets" / "2017" / f"{split}.txt"
    if not path.exists():
        raise InputError(f"{path}: split file missing; --davis must be a DAVIS-2017 folder (JPEGImages, "
                         "Annotations, ImageSets/2017) or give --sequences")
    names = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if not names:
        raise InputError(f"{path}: the split file lists no sequence")
    return names


def read_sequences(root: Path, split: str = "val", sequences: tuple[str, ...] = (),
                   resolution: str = "480p") -> list[Sequence]:
    """Every sequence of the split with its frames and annotations, checked against each other:
    the first frame must be annotated, every annotation must belong to a frame and have its size."""
    root = Path(root)
    if not (root / "JPEGImages" / resolution).is_dir():
        raise InputError(f"{root}: no JPEGImages/{resolution} folder; --davis must be a DAVIS-2017 folder")
    out = []
    for name in read_split(root, split, sequences):
        jpgs = root / "JPEGImages" / resolution / name
        anns = root / "Annotations" / resolution / name
        frames = sorted(jpgs.glob("*.jpg"))
        if not frames:
            raise InputError(f"{jpgs}: no .jpg frames for sequence {name!r}")
        pngs = sorted(anns.glob("*.png"))
        stems = {p.stem for p in frames}
        stray = [p for p in pngs if p.stem not in stems]
        if stray:
            raise InputError(f"{stray[0]}: annotation without a frame {stray[0].stem}.jpg in {jpgs} "
                             f"(frame/annotation mismatch); annotations must be named like their frames")
        if not pngs or pngs[0].stem != frames[0].stem:
            raise InputError(f"{anns / (frames[0].stem + '.png')}: the first frame's annotation is missing; "
                             "propagation starts from it")
        with Image.open(frames[0]) as im:
            fsize = im.size
        with Image.open(pngs[0]) as im:
            asize = im.size
        if fsize != asize:
            raise InputError(f"{pngs[0]}: annotation is {asize[0]}x{asize[1]} but frame {frames[0].name} is "
                             f"{fsize[0]}x{fsize[1]} (frame/annotation mismatch)")
        out.append(Sequence(name=name, root=jpgs, frames=frames, annotations=pngs))
    return out
