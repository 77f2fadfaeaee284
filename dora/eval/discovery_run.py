"""`dora-eval discovery`: LOST boxes and CorLoc over a VOC image set, [CLS]-attention Jaccard on VOC 2012
segmentation val. Per-image results are appended to OUT/*.jsonl as they finish, so a killed run resumes
(only with the same checkpoint content, model and parameters; `restart` starts the log afresh)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm import tqdm

from dora.data import IMAGENET_MEAN, IMAGENET_STD
from dora.eval.common import Encoder
from dora.eval.discovery import attention_masks, box_iou, corloc_hit, draw_sheet, jaccard_image
from dora.eval.lost import lost
from dora.eval.prefetch import prefetch
from dora.eval.resume import another_run, as_read_back, model_stamp
from dora.eval.voc import VocImage
from dora.model import QKTap
from pipeline.errors import InputError
from pipeline.files import atomic_open, write_json_atomic

MEAN, STD = IMAGENET_MEAN, IMAGENET_STD  # LOST's transform


class ResultLog:
    """OUT/<name>.jsonl: a stamp line, then one {"id": ..., ...} line per finished image. Reopening with
    another stamp is an InputError naming what differs (`restart`: the old lines are dropped); a line torn
    by a kill is dropped."""

    def __init__(self, path: Path, stamp: dict, restart: bool = False):
        self.path = Path(path)
        self.done: dict[str, dict] = {}
        stamp = as_read_back(stamp)
        lines = self.path.read_text().splitlines() if self.path.exists() and not restart else []
        good = []
        for line in lines:
            try:
                good.append(json.loads(line))
            except json.JSONDecodeError:
                break
        if good and good[0].get("stamp") != stamp:
            raise InputError(another_run(str(self.path), good[0].get("stamp") or {}, stamp))
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_open(self.path) as f:  # drops a torn last line; a kill here leaves the old file
            for rec in good or [{"stamp": stamp}]:
                f.write(json.dumps(rec) + "\n")
        self.done = {r["id"]: r for r in good[1:]}

    def add(self, rec: dict) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(rec) + "\n")
        self.done[rec["id"]] = rec


def image_tensor(img: Image.Image, patch: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """Normalised [3, H', W'] zero-padded (after normalisation, as LOST) to multiples of the patch."""
    x = torch.from_numpy(np.asarray(img.convert("RGB"), dtype=np.float32) / 255).permute(2, 0, 1)
    x = (x - torch.tensor(MEAN).view(3, 1, 1)) / torch.tensor(STD).view(3, 1, 1)
    h, w = x.shape[1:]
    x = F.pad(x, (0, -w % patch, 0, -h % patch))
    return x, (h, w)


def open_image(path: Path) -> Image.Image:
    try:
        with Image.open(path) as im:
            return im.convert("RGB")
    except OSError as e:
        raise InputError(f"{path}: not a readable image ({e})") from None


@torch.no_grad()
def last_block(encoder: Encoder, tap: QKTap, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Patch keys [n, d] (heads concatenated) and the [CLS] attention [heads, n] of the last block."""
    with tap:
        encoder.model.forward_features(x[None].to(encoder.device))
        return tap.patch_keys()[0], tap.cls_attention()[0]


def run_corloc(encoder: Encoder, tap: QKTap, images: list[VocImage], out: Path, k_patches: int, workers: int,
               sheet_n: int, stamp: dict, quiet: bool, restart: bool = False) -> dict:
    """LOST box per image, CorLoc, OUT/boxes.json and OUT/corloc_sheet.png (first `sheet_n` images)."""
    log = ResultLog(out / "corloc.jsonl", {**stamp, "model": model_stamp(encoder)}, restart)
    todo = [im for im in images if im.id not in log.done]
    p = encoder.patch
    with tqdm(total=len(images), initial=len(images) - len(todo), unit="img", desc="corloc",
              disable=quiet, dynamic_ncols=True) as bar:
        for im, (x, size) in zip(todo, prefetch(lambda v: image_tensor(open_image(v.image), p), todo, workers),
                                 strict=True):
            keys, _ = last_block(encoder, tap, x)
            grid = (x.shape[1] // p, x.shape[2] // p)
            res = lost(keys, grid, p, size, k_patches)
            ious = [float(v) for v in np.round(box_iou(res.box, im.boxes), 6)]
            log.add({"id": im.id, "pred": res.box.tolist(), "gt": im.boxes.tolist(), "iou": ious,
                     "correct": corloc_hit(res.box, im.boxes), "seed": list(divmod(res.seed, grid[1]))})
            bar.update(1)
    recs = [log.done[im.id] for im in images]
    write_json_atomic(out / "boxes.json", {r["id"]: {k: v for k, v in r.items() if k != "id"} for r in recs})
    first = [(im.image, np.array(r["pred"]), im.boxes, r["correct"])
             for im, r in zip(images[:sheet_n], recs[:sheet_n], strict=True)]
    if first:
        draw_sheet(first, out / "corloc_sheet.png")
    hits = sum(r["correct"] for r in recs)
    return {"corloc": 100.0 * hits / len(recs), "n_correct": hits, "n_images": len(recs)}


def run_jaccard(encoder: Encoder, tap: QKTap, items: list[tuple[str, Path, Path]], out: Path, mode: str,
                size: int, workers: int, stamp: dict, quiet: bool, restart: bool = False) -> dict:
    """Mean Jaccard of the attention masks against VOC 2012 SegmentationClass over the images that hold an
    object; `size` > 0 resizes image and labels to size × size first (0: native size, padded)."""
    log = ResultLog(out / f"jaccard_{mode}.jsonl", {**stamp, "model": model_stamp(encoder)}, restart)
    todo = [it for it in items if it[0] not in log.done]
    p = encoder.patch

    def load(it: tuple[str, Path, Path]):
        img = open_image(it[1])
        with Image.open(it[2]) as lab_im:
            labels = lab_im.copy()
        if labels.size != img.size:
            raise InputError(f"{it[2]}: {labels.size} but its image is {img.size}")
        if size:
            img, labels = img.resize((size, size), Image.BILINEAR), labels.resize((size, size), Image.NEAREST)
        return image_tensor(img, p), np.array(labels)

    with tqdm(total=len(items), initial=len(items) - len(todo), unit="img", desc=f"jaccard {mode}",
              disable=quiet, dynamic_ncols=True) as bar:
        for it, ((x, (h, w)), labels) in zip(todo, prefetch(load, todo, workers), strict=True):
            _, attn = last_block(encoder, tap, x)
            grid = (x.shape[1] // p, x.shape[2] // p)
            masks = attention_masks(attn, mode).reshape(-1, 1, *grid).float()
            masks = F.interpolate(masks, scale_factor=p, mode="nearest")[:, 0, :h, :w].bool().cpu().numpy()
            log.add({"id": it[0], "jaccard": jaccard_image(masks, labels, mode)})
            bar.update(1)
    vals = [log.done[it[0]]["jaccard"] for it in items]
    scored = [v for v in vals if v is not None]
    if not scored:
        raise InputError("no segmentation label holds an object pixel: nothing to score")
    return {"jaccard": 100.0 * float(np.mean(scored)), "jaccard_mask": mode, "n_images": len(scored),
            "n_without_objects": len(vals) - len(scored), "size": size or "native"}
