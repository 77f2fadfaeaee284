"""`dora-eval`: look at what a checkpoint learned.

  attention CKPT IMAGE... --out DIR   the teacher's last-block [CLS] attention, one map per head
                                      (as in DINO's and the paper's attention figures)
  tracking CKPT --shards DIR --out DIR
                                      clips drawn as in training, with the k objects DoRA discovers
                                      in the first frame tracked through the clip (like Figure 4)
CKPT: a `dora-train` checkpoint, a run folder (its newest checkpoint), an export, or an official DoRA/DINO
checkpoint. DIR defaults to runs/eval.
"""

from __future__ import annotations

from pathlib import Path

import click
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from dora.checkpoint import backbone_weights, latest, load, load_backbone
from dora.config import config_from_dict, load_config
from pipeline.errors import InputError, report_errors


def teacher_model(ckpt_path: Path, config: Path | None, overrides: tuple[str, ...]):
    """A DoRA module whose teacher backbone holds the checkpoint's weights (a run folder: its newest one)."""
    from dora.method import DoRA

    if Path(ckpt_path).is_dir():
        newest = latest(Path(ckpt_path))
        if newest is None:
            raise InputError(f"{ckpt_path}: no checkpoints/step_*.pth in this run folder; train first, or give "
                             "a checkpoint file")
        ckpt_path = newest
    state = load(ckpt_path)
    saved = state.get("config") if isinstance(state, dict) else None
    cfg = load_config(config, overrides) if config or not saved else config_from_dict(saved, overrides)
    model = DoRA(cfg).eval()
    load_backbone(model.teacher.backbone, backbone_weights(state))
    return model


def attention_sheet(model, image: Path, out: Path, size: int) -> Path:
    """PNG: the image, then one [CLS] attention map per head of the last block."""
    from dora.viz import MEAN, STD

    try:
        img = Image.open(image).convert("RGB")
    except OSError as e:
        raise InputError(f"{image}: not a readable image ({e}); give JPEG or PNG files") from None
    p = model.patch
    w, h = img.size
    scale = size / min(w, h)
    w, h = max(p, round(w * scale) // p * p), max(p, round(h * scale) // p * p)
    img = img.resize((w, h), Image.BICUBIC)
    x = (torch.from_numpy(np.array(img)).permute(2, 0, 1).float() / 255 - MEAN) / STD
    with torch.no_grad(), model.tap:
        model.teacher.backbone.forward_features(x[None])
        attn = model.tap.cls_attention()[0]  # [heads, n]
    maps = attn.reshape(-1, 1, h // p, w // p)
    maps = F.interpolate(maps, size=(h, w), mode="nearest")[:, 0]
    maps = maps / maps.amax(dim=(1, 2), keepdim=True).clamp_min(1e-12)
    tiles = [np.asarray(img)] + [(np.stack([m.numpy()] * 3, -1) * np.array([255, 200, 60])).astype(np.uint8)
                                 for m in maps]
    sheet = Image.new("RGB", (w * len(tiles), h))
    for i, t in enumerate(tiles):
        sheet.paste(Image.fromarray(t), (i * w, 0))
    path = out / f"attention_{image.stem}.png"
    sheet.save(path)
    return path


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Look at what a DoRA (or DINO) checkpoint learned."""


@main.command()
@click.argument("checkpoint", type=click.Path(path_type=Path))
@click.argument("images", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), default=Path("runs/eval"), show_default=True)
@click.option("--size", type=click.IntRange(min=32), default=480, show_default=True, help="Short side of the input.")
@click.option("--config", type=click.Path(path_type=Path), default=None, help="[default: the checkpoint's]")
def attention(checkpoint, images, out, size, config) -> None:
    """Last-block [CLS] attention of every head, for each image, as PNG."""

    def go() -> None:
        model = teacher_model(checkpoint, config, ())
        out.mkdir(parents=True, exist_ok=True)
        for image in images:
            click.echo(str(attention_sheet(model, image, out, size)))

    report_errors(go)


@main.command()
@click.argument("checkpoint", type=click.Path(path_type=Path))
@click.option("--shards", required=True, type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), default=Path("runs/eval"), show_default=True)
@click.option("--n", "n", type=click.IntRange(min=1), default=4, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--config", type=click.Path(path_type=Path), default=None, help="[default: the checkpoint's]")
def tracking(checkpoint, shards, out, n, seed, config) -> None:
    """N clips with their tracked objects overlaid per frame, as PNG (like the paper's Figure 4)."""

    def go() -> None:
        from dora.batches import BatchSource
        from dora.loader import render_host_batch
        from dora.viz import tracking_sheet

        if not (Path(shards) / "dataset.json").exists():
            raise InputError(f"{shards}: not a shard folder (no dataset.json)")
        model = teacher_model(checkpoint, config, (f"train.seed={seed}", f"train.batch_size={n}"))
        batch = render_host_batch(BatchSource([str(shards)], model.cfg)(0), model.cfg)
        clips = batch["globals"][:, :, :1]
        with torch.no_grad():
            _, maps, _ = model.track_objects(clips)
        if maps is None:
            raise InputError("the config's dora.method is dino: there is nothing to track")
        grid = (clips.shape[-2] // model.patch, clips.shape[-1] // model.patch)
        out.mkdir(parents=True, exist_ok=True)
        for i in range(clips.shape[0]):
            path = tracking_sheet(clips[i, :, 0], maps[i, :, 0], grid, out / f"tracking_{i:02d}.png",
                                  f"clip {i}: k={maps.shape[3]} objects discovered in frame 1, tracked")
            click.echo(str(path))

    report_errors(go)


if __name__ == "__main__":
    main()
