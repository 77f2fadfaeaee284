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


def voc_xml(boxes, size: tuple[int, int], name: str = "square") -> str:
    """A VOC annotation with `boxes` given as VOC writes them (1-based inclusive xmin, ymin, xmax, ymax)."""
    objs = "".join(f"<object><name>{name}</name><truncated>0</truncated><difficult>0</difficult><bndbox>"
                   f"<xmin>{b[0]}</xmin><ymin>{b[1]}</ymin><xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>"
                   for b in boxes)
    return (f"<annotation><size><width>{size[1]}</width><height>{size[0]}</height><depth>3</depth></size>"
            f"{objs}</annotation>")


def write_voc(root: Path, year: int, n: int, h: int = 96, w: int = 128, image_set: str = "val",
              segmentation: bool = False) -> list[str]:
    """ROOT/VOC<year> with n images of a red square at a known place on blue, one box each (its true box);
    with `segmentation`, SegmentationClass PNGs (class 1 on the square, a void border) and the
    Segmentation list. Returns the ids."""
    voc = root / f"VOC{year}"
    for d in ("JPEGImages", "Annotations", "ImageSets/Main", "ImageSets/Segmentation", "SegmentationClass"):
        (voc / d).mkdir(parents=True, exist_ok=True)
    ids = []
    for i in range(n):
        iid = f"{year}_{i:06d}"
        y, x, side = 10 + 7 * i % 40, 12 + 11 * i % 60, 32 + 4 * (i % 3)
        img = np.empty((h, w, 3), np.uint8)
        img[:] = BLUE
        img[y:y + side, x:x + side] = RED
        Image.fromarray(img).save(voc / "JPEGImages" / f"{iid}.jpg", quality=95)
        (voc / "Annotations" / f"{iid}.xml").write_text(voc_xml([(x + 1, y + 1, x + side, y + side)], (h, w)))
        if segmentation:
            lab = np.zeros((h, w), np.uint8)
            lab[y:y + side, x:x + side] = 1
            lab[y - 1, x:x + side] = 255
            im = Image.fromarray(lab, mode="P")
            im.putpalette(voc_palette().ravel().tolist())
            im.save(voc / "SegmentationClass" / f"{iid}.png")
        ids.append(iid)
    (voc / "ImageSets" / "Main" / f"{image_set}.txt").write_text("".join(i + "\n" for i in ids))
    if segmentation:
        (voc / "ImageSets" / "Segmentation" / "val.txt").write_text("".join(i + "\n" for i in ids))
    return ids


def eval_inputs(root: Path, video: Path) -> dict[str, Path]:
    """Everything the command-line fault tests feed the commands, under ROOT: a shard folder of `video`,
    a `dora-train` step-0 checkpoint of it, DAVIS and VOC folders, an ImageFolder, one image, and a
    text file named like a checkpoint."""
    from tests.conftest import run_entry
    from tests.imagefolders import make_folder

    ds = root / "ds"
    r = run_entry("dora-data", "shard", video, "--out", ds, "--clip-frames", "4", "--clip-stride-s", "0.5",
                  "--workers", "1", "--quiet")
    assert r.returncode == 0, r.stderr
    r = run_entry("dora-train", "--shards", ds, "--config", "smoke", "--output", root / "run", "--quiet",
                  "train.epochs=0")
    assert r.returncode == 0, r.stderr
    frames, labels = square_frames(4, 64, 96, 24, 4)
    write_davis(root / "davis", "square", frames, labels)
    write_voc(root, 2012, 2, segmentation=True)
    folder = make_folder(root / "images", classes=2, train_per_class=3, val_per_class=2)
    text = root / "model.pth"
    text.write_text("these are my notes, not a checkpoint\n")
    return {"ds": ds, "ckpt": root / "run" / "checkpoints" / "step_00000000.pth", "davis": root / "davis",
            "voc": root / "VOC2012", "images": folder, "image": next((folder / "val").rglob("*.jpg")),
            "video": video, "text": text, "root": root}


def one_error_line(r) -> str:
    """The single `error:` line of a refused command (exit status 2, no traceback); other stderr lines
    (progress, warnings) are allowed."""
    assert r.returncode == 2, (r.returncode, r.stderr[-3000:])
    assert "Traceback" not in r.stderr, r.stderr[-3000:]
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1, r.stderr[-3000:]
    return errors[0]
