"""`dora-eval`: look at what a checkpoint learned.

  attention CKPT IMAGE... --out DIR   the teacher's last-block [CLS] attention, one map per head
                                      (as in DINO's and the paper's attention figures)
  tracking CKPT --shards DIR --out DIR
                                      clips drawn as in training, with the k objects DoRA discovers
                                      in the first frame tracked through the clip (like Figure 4)
CKPT: a `dora-train` checkpoint, an export, or an official DoRA/DINO checkpoint.
"""

from __future__ import annotations

from pathlib import Path

import click
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from dora.checkpoint import backbone_weights, load, load_backbone
from dora.config import config_from_dict, load_config
from pipeline.atomic import write_json_atomic
from pipeline.errors import InputError, report_errors


def teacher_model(ckpt_path: Path, config: Path | None, overrides: tuple[str, ...]):
    """A DoRA module whose teacher backbone holds the checkpoint's weights."""
    from dora.method import DoRA

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
@click.option("--out", type=click.Path(path_type=Path), required=True)
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


DEVICE = click.Choice(["auto", "cpu", "cuda"])


def _sequence_names(values: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(n for v in values for n in v.split(",") if n)


@main.command()
@click.argument("checkpoint", required=False, type=click.Path(path_type=Path))
@click.option("--davis", "root", required=True, type=click.Path(path_type=Path), help="DAVIS-2017 folder.")
@click.option("--split", default="val", show_default=True, help="ImageSets/2017/<split>.txt")
@click.option("--sequences", multiple=True, help="Only these sequences (repeat or comma-separate).")
@click.option("--key", type=click.Choice(["teacher", "student"]), default="teacher", show_default=True)
@click.option("--device", type=DEVICE, default="auto", show_default=True)
@click.option("--out", type=click.Path(path_type=Path), default=Path("davis_results"), show_default=True)
@click.option("--json", "echo_json", is_flag=True, help="Also print metrics.json.")
@click.option("--eval-only", "eval_only", type=click.Path(path_type=Path), default=None,
              help="Score the PNGs in this results folder; no checkpoint needed.")
@click.option("--batch-size", type=click.IntRange(min=1), default=8, show_default=True, help="Frames per forward.")
@click.option("--workers", type=click.IntRange(min=0), default=4, show_default=True, help="Frame-reading threads.")
@click.option("--config", type=click.Path(path_type=Path), default=None, help="Model YAML for files without one.")
@click.option("--short-side", type=click.IntRange(min=16), default=480, show_default=True)
@click.option("--multiple", type=click.IntRange(min=1), default=64, show_default=True,
              help="The long side is floored to a multiple of this.")
@click.option("--n-last", type=click.IntRange(min=0), default=7, show_default=True, help="Previous frames in context.")
@click.option("--radius", type=click.IntRange(min=0), default=12, show_default=True,
              help="Neighbourhood radius in patches (0: none).")
@click.option("--topk", type=click.IntRange(min=1), default=5, show_default=True)
@click.option("--temperature", type=click.FloatRange(min=0, min_open=True), default=0.1, show_default=True)
@click.option("--bound-th", type=click.FloatRange(min=0, min_open=True), default=0.008, show_default=True,
              help="F boundary tolerance (fraction of the diagonal, or pixels when >= 1).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def davis(checkpoint, root, split, sequences, key, device, out, echo_json, eval_only, batch_size, workers, config,
          short_side, multiple, n_last, radius, topk, temperature, bound_th, quiet) -> None:
    """DAVIS-2017 video object segmentation by DINO's label propagation; J&F as davis2017-evaluation."""

    def go() -> None:
        from dora.eval import davis as run_davis
        from dora.eval.common import RunRecord, load_encoder, pick_device
        from dora.eval.davis_data import read_sequences
        from dora.eval.davis_score import score_results
        from dora.eval.propagation import PropagationCfg

        seqs = read_sequences(root, split, _sequence_names(sequences))
        if eval_only is not None:
            if not Path(eval_only).is_dir():
                raise InputError(f"{eval_only}: --eval-only needs a folder of <sequence>/<frame>.png results")
            scores = score_results(seqs, eval_only, bound_th)
            data = {"task": "davis", "results_dir": str(eval_only), "davis": str(root), "split": split,
                    "params": {"bound_th": bound_th, "sequences": [s.name for s in seqs]}, **scores}
            out.mkdir(parents=True, exist_ok=True)
            write_json_atomic(out / "metrics.json", data)
            _davis_summary(data, echo_json)
            return
        if checkpoint is None:
            raise InputError("give a CHECKPOINT (or --eval-only RESULTS_DIR to score existing PNGs)")
        cfg = PropagationCfg(short_side=short_side, multiple=multiple, n_last=n_last, radius=radius, topk=topk,
                             temperature=temperature)
        enc = load_encoder(checkpoint, key, pick_device(device), config)
        params = {**cfg.as_dict(), "split": split, "sequences": [s.name for s in seqs], "batch_size": batch_size,
                  "bound_th": bound_th, "davis": str(root)}
        record = RunRecord("davis", enc, "last-block patch tokens after the final norm", params)
        stamp = {"checkpoint_sha256": record.as_dict()["checkpoint_sha256"], "key": key, **cfg.as_dict()}
        counts = run_davis.run(enc, seqs, out, cfg, batch_size, workers, stamp, quiet)
        scores = score_results(seqs, out, bound_th)
        data = record.write(out, False, **counts, **scores)
        _davis_summary(data, echo_json)

    report_errors(go)


def _davis_summary(data: dict, echo_json: bool) -> None:
    import json

    if echo_json:
        click.echo(json.dumps(data, indent=1))
    else:
        keys = ["J&F-Mean", "J-Mean", "J-Recall", "J-Decay", "F-Mean", "F-Recall", "F-Decay"]
        click.echo("  ".join(f"{k} {data[k]:.3f}" for k in keys))


@main.command()
@click.argument("checkpoint", type=click.Path(path_type=Path))
@click.option("--shards", required=True, type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), required=True)
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
