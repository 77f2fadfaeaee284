"""`dora-eval`: look at what a checkpoint learned.

  attention CKPT IMAGE... --out DIR   the teacher's last-block [CLS] attention, one map per head
                                      (as in DINO's and the paper's attention figures)
  tracking CKPT --shards DIR --out DIR
                                      clips drawn as in training, with the k objects DoRA discovers
                                      in the first frame tracked through the clip (like Figure 4)
  knn CKPT --data ROOT                weighted k-NN top-1/top-5 on frozen [CLS] features (DINO's protocol)
  linear CKPT --data ROOT             linear probe on the last 4 blocks' [CLS] (DINO's protocol), resumable
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



class SpreadK(click.Command):
    """Lets `--k 10 20 100 200` (DINO's --nb_knn style) mean `--k 10 --k 20 --k 100 --k 200`."""

    def parse_args(self, ctx, args):
        out, in_k = [], False
        for a in args:
            if a == "--k":
                in_k = True
                out.append(a)
            elif in_k and a.isdigit() and out[-1] != "--k":
                out += ["--k", a]
            else:
                in_k = in_k and out[-1] == "--k"
                out.append(a)
        return super().parse_args(ctx, out)


def eval_options(default_batch: int):
    """Options every frozen-feature evaluation shares."""

    def wrap(f):
        for opt in reversed([
            click.option("--key", type=click.Choice(["teacher", "student"]), default="teacher", show_default=True),
            click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True),
            click.option("--batch-size", type=click.IntRange(min=1), default=default_batch, show_default=True),
            click.option("--workers", type=click.IntRange(min=0), default=4, show_default=True,
                         help="Decoding threads (DALI) or DataLoader workers (torchvision)."),
            click.option("--decoder", type=click.Choice(["auto", "dali", "torch"]), default="auto",
                         show_default=True, help="auto: DALI when installed (nvJPEG on a GPU), else torchvision."),
            click.option("--precision", type=click.Choice(["fp32", "bf16", "fp16"]), default="fp32",
                         show_default=True, help="Forward precision on a GPU (DINO: fp32)."),
            click.option("--resize", type=click.IntRange(min=8), default=256, show_default=True,
                         help="Evaluation transform: short side before the center crop (DINO: 256)."),
            click.option("--crop", type=click.IntRange(min=8), default=224, show_default=True,
                         help="Evaluation transform: center crop (DINO: 224)."),
            click.option("--config", type=click.Path(path_type=Path), default=None,
                         help="Model config [default: the checkpoint's, or read off the weights]"),
            click.option("--json", "echo_json", is_flag=True, help="Also print metrics.json."),
            click.option("--quiet", is_flag=True, help="No progress bars."),
        ]):
            f = opt(f)
        return f

    return wrap


@main.command(cls=SpreadK)
@click.argument("checkpoint", type=click.Path(path_type=Path))
@click.option("--data", type=click.Path(path_type=Path), default=None,
              help="ROOT with train/<class>/ and val/<class>/ images (ImageFolder layout).")
@click.option("--out", type=click.Path(path_type=Path), default=Path("eval/knn"), show_default=True)
@click.option("--k", "ks", type=click.IntRange(min=1), multiple=True, default=(10, 20, 100, 200), show_default=True,
              help="Neighbours: --k 10 20 100 200 (or --k 10 --k 20 ...).")
@click.option("--temperature", type=click.FloatRange(min=0, min_open=True), default=0.07, show_default=True)
@click.option("--dump-features", type=click.Path(path_type=Path), default=None,
              help="Write DINO's trainfeat/testfeat/trainlabels/testlabels .pth files here.")
@click.option("--load-features", type=click.Path(path_type=Path), default=None,
              help="Read those four files instead of extracting features.")
@eval_options(default_batch=256)
def knn(checkpoint, data, out, ks, temperature, dump_features, load_features, key, device, batch_size, workers,
        decoder, precision, resize, crop, config, echo_json, quiet) -> None:
    """Weighted k-NN top-1/top-5 on frozen [CLS] features (DINO's eval_knn.py protocol)."""

    def go() -> None:
        from dora.eval import knn as knn_eval
        from dora.eval.common import RunRecord, load_encoder, pick_device
        from dora.eval.images import check_sizes, choose_decoder

        check_sizes(resize, crop)
        dev = pick_device(device)
        dec = choose_decoder(decoder) if load_features is None else "none"
        enc = load_encoder(checkpoint, key, dev, config)
        params = {"data": str(data) if data else None, "k": list(ks), "temperature": temperature,
                  "batch_size": batch_size, "workers": workers, "decoder": dec, "precision": precision,
                  "resize": resize, "crop": crop, "interpolation": "bicubic",
                  "dump_features": str(dump_features) if dump_features else None,
                  "load_features": str(load_features) if load_features else None}
        record = RunRecord("knn", enc, "cls_after_norm", params)
        res = knn_eval.run(enc, data, list(ks), temperature, batch_size, workers, dec, precision, resize, crop,
                           dump_features, load_features, quiet, say=lambda m: click.echo(m, err=True))
        knn_eval.plot(res["results"], Path(out) / "knn.png", f"k-NN, T={temperature}: {Path(checkpoint).name}")
        data_out = record.write(out, echo_json, **res)
        for k, r in data_out["results"].items():
            click.echo(f"{k}-NN: top-1 {r['top1']:.2f}  top-5 {r['top5']:.2f}", err=echo_json)
        click.echo(f"wrote {Path(out) / 'metrics.json'}", err=True)

    report_errors(go)



@main.command()
@click.argument("checkpoint", type=click.Path(path_type=Path))
@click.option("--data", type=click.Path(path_type=Path), required=True,
              help="ROOT with train/<class>/ and val/<class>/ images (ImageFolder layout).")
@click.option("--out", type=click.Path(path_type=Path), default=Path("eval/linear"), show_default=True,
              help="Run folder: checkpoint.pth (resumed when present), metrics.jsonl, linear_curve.png, metrics.json.")
@click.option("--epochs", type=click.IntRange(min=1), default=100, show_default=True)
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=0.001, show_default=True,
              help="At batch 256; scaled by batch/256.")
@click.option("--n-last-blocks", type=click.IntRange(min=1), default=4, show_default=True,
              help="[CLS] of this many last blocks, concatenated (DINO: 4 for ViT-S, 1 for ViT-B).")
@click.option("--avgpool", is_flag=True, help="Also the mean of the last block's patch tokens (DINO: ViT-B).")
@click.option("--cached-features", is_flag=True,
              help="Fast: train on features of un-augmented images extracted once (a recorded deviation).")
@click.option("--seed", type=int, default=0, show_default=True)
@eval_options(default_batch=1024)
def linear(checkpoint, data, out, epochs, lr, n_last_blocks, avgpool, cached_features, seed, key, device, batch_size,
           workers, decoder, precision, resize, crop, config, echo_json, quiet) -> None:
    """Linear probe on frozen features (DINO's eval_linear.py protocol); resumes after a kill."""

    def go() -> None:
        from dataclasses import asdict

        from dora.eval.common import RunRecord, load_encoder, pick_device
        from dora.eval.images import check_sizes, choose_decoder
        from dora.eval.linear import LinearParams, LinearProbe

        check_sizes(resize, crop)
        dev = pick_device(device)
        p = LinearParams(epochs=epochs, lr=lr, batch_size=batch_size, n_last_blocks=n_last_blocks, avgpool=avgpool,
                         cached=cached_features, seed=seed, workers=workers, decoder=choose_decoder(decoder),
                         precision=precision, resize=resize, crop=crop)
        enc = load_encoder(checkpoint, key, dev, config)
        feature = f"cls_last{n_last_blocks}_after_norm" + ("+patch_mean" if avgpool else "")
        record = RunRecord("linear", enc, feature, {"data": str(data), **asdict(p), "momentum": 0.9,
                                                    "weight_decay": 0.0, "schedule": "cosine per epoch to 0",
                                                    "train_transform": f"RandomResizedCrop+flip ({p.decoder})"})
        res = LinearProbe(enc, data, out, p, quiet, say=lambda m: click.echo(m, err=True)).fit()
        r = record.write(out, echo_json, **res)["results"]
        click.echo(f"linear: best top-1 {r['best_top1']:.2f} (epoch {r['best_epoch']}), last {r['last_top1']:.2f}",
                   err=echo_json)
        click.echo(f"wrote {Path(out) / 'metrics.json'}", err=True)

    report_errors(go)


if __name__ == "__main__":
    main()
