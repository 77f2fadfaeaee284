"""`dora-train`: DoRA (or DINO) pretraining on shard folders, and `dora-train export`."""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

import click

from pipeline.cli_errors import DefaultCommandGroup, version_option
from pipeline.files import FolderLock, check_writable, remove_empty
from pipeline.store import PathOrURL

# DINO's (and the official DoRA's) main_dino.py flags, and what they are here.
DINO_FLAGS = {
    "--epochs": "train.epochs=N", "--batch_size_per_gpu": "train.batch_size=N (clips per GPU)",
    "--batch_size": "train.batch_size=N (clips per GPU)", "--lr": "optim.lr=X (at batch 256)",
    "--arch": "model.arch=NAME (a timm ViT, e.g. vit_small_patch16_224)",
    "--patch_size": "model.arch=vit_small_patch8_224", "--output_dir": "--output DIR",
    "--data_path": "--shards DIR (or --images DIR)", "--out_dim": "model.out_dim=N",
    "--local_crops_number": "data.local_crops=N", "--teacher_temp": "loss.teacher_temp=X",
    "--warmup_teacher_temp": "loss.warmup_teacher_temp=X",
    "--warmup_teacher_temp_epochs": "loss.warmup_teacher_temp_epochs=N", "--warmup_epochs": "optim.warmup_epochs=N",
    "--min_lr": "optim.min_lr=X", "--norm_last_layer": "model.norm_last_layer=true",
    "--momentum_teacher": "optim.momentum_teacher=X", "--use_fp16": "train.precision=fp16",
    "--optimizer": "optim.optimizer=adamw", "--weight_decay": "optim.weight_decay=X",
    "--weight_decay_end": "optim.weight_decay_end=X", "--clip_grad": "optim.clip_grad=X",
    "--freeze_last_layer": "optim.freeze_last_layer_epochs=N", "--drop_path_rate": "model.drop_path=X",
    "--num_workers": "train.num_workers=N", "--seed": "train.seed=N",
    "--saveckp_freq": "train.checkpoint_every=STEPS (in steps, not epochs)",
}


def dino_flag_hint(args: list[str]) -> str | None:
    """One line for the first of DINO's main_dino.py flags in `args` (`--batch-size` too), naming what to
    type here instead."""
    for a in args:
        flag = a.split("=", 1)[0]
        key = "--" + flag.lstrip("-").replace("-", "_")
        if flag.startswith("--") and key in DINO_FLAGS:
            return (f"{flag} is a flag of DINO's main_dino.py; here settings are key=value overrides after the "
                    f"options: {DINO_FLAGS[key]} (see configs/*.yaml for every key)")
    return None


class TrainGroup(DefaultCommandGroup):
    interrupted_hint = "run the same command again to resume from the last checkpoint"

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        own = {o for p in train.params for o in getattr(p, "opts", ())}
        hint = dino_flag_hint([a for a in args if a.split("=", 1)[0] not in own])
        if hint:
            click.echo(f"error: {hint}", err=True)
            ctx.exit(2)
        return super().parse_args(ctx, args)


@click.group(cls=TrainGroup, context_settings={"help_option_names": ["-h", "--help"]})
@version_option("dora-train")
def main() -> None:
    """DoRA (or DINO) pretraining: `dora-train [train] --shards DIR ...`; `dora-train export CKPT ...`."""


@main.command(context_settings={"help_option_names": ["-h", "--help"], "ignore_unknown_options": False},
              epilog="Also: `dora-train export CHECKPOINT --to timm|dino|hf|mmseg|mae|seqtrack OUT` writes the "
                     "teacher backbone.")
@click.option("--shards", "shards", multiple=True, type=PathOrURL(),
              help="Shard folder from `dora-data shard` (repeat for several), or its URL (s3://, gs://): copied to "
                   "--cache-dir and verified first.")
@click.option("--cache-dir", type=click.Path(path_type=Path), default=None,
              help="Where --shards URLs are copied [default: $DORA_CACHE/shards or ~/.cache/dora-wt/shards].")
@click.option("--images", "images", type=click.Path(path_type=Path), default=None,
              help="DoRA* (appendix D): an ImageFolder or folder of JPEGs instead of --shards "
                   "(use --config configs/dora_star_vits16.yaml).")
@click.option("--config", "config", type=click.Path(path_type=Path), default=None,
              help="YAML config, or a shipped config's name (found from any folder) [default: the schema's defaults, "
                   "which equal configs/dora_vits16.yaml, the paper].")
@click.option("--output", type=click.Path(path_type=Path), default=None, help="Run folder [default: runs/CONFIG].")
@click.option("--resume", default="auto", show_default=True,
              help="auto: continue from the newest checkpoint in --output; none: refuse if there is one; or a path.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.argument("overrides", nargs=-1)
def train(shards, cache_dir, images, config, output, resume, quiet, overrides) -> None:
    """Train DoRA on SHARDS (or DoRA* on IMAGES); OVERRIDES are key=value settings, e.g. train.batch_size=32."""

    from dora.config import load_config, resolve_config
    from dora.train import Trainer
    from pipeline.errors import InputError
    from pipeline.store import is_url, redact, stage

    if bool(shards) == bool(images):
        raise InputError("give either --shards FOLDER (videos, from `dora-data shard`) or --images FOLDER "
                         "(DoRA*: a folder of JPEGs), not " + ("both" if shards else "neither"))
    path = resolve_config(config)
    cfg = load_config(path, overrides)
    run = output or Path("runs") / (path.stem if path else "default")
    first = int(os.environ.get("RANK", "0")) == 0  # torchrun: one lock per run, and one summary, from rank 0
    made = check_writable(run, "--output") if first else []
    try:
        with FolderLock(run, "dora-train", hint="another --output") if first else contextlib.nullcontext():
            local = [str(stage(s, cache_dir, quiet) if is_url(s) else s) for s in shards]  # every rank; one per node
            summary = Trainer(local, cfg, run, resume, quiet, images=images,
                              names=[redact(str(s)) for s in shards]).fit(quiet=quiet)
    finally:
        remove_empty(made)  # a run refused before it wrote anything leaves no folder
    if first:
        click.echo(json.dumps(summary))


@main.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("checkpoint", type=click.Path(path_type=Path))
@click.argument("out_arg", metavar="[OUT]", required=False, type=click.Path(path_type=Path))
@click.option("--to", "to", required=True, metavar="FORMAT",
              help="timm | dino | hf (a transformers ViT folder) | mmseg | mae ({\"model\": ...} for MAE/ViTDet) "
                   "| seqtrack.")
@click.option("--out", "out", type=click.Path(path_type=Path), default=None,
              help="Where to write (a file; a folder for hf); or give OUT after CHECKPOINT.")
@click.option("--key", default="teacher", show_default=True, help="Which network of the checkpoint.")
@click.option("--metrics", "metrics", multiple=True, type=click.Path(path_type=Path),
              help="hf: a dora-eval metrics.json (or its folder) whose numbers go into the model card (repeat "
                   "for several); those beside the checkpoint that evaluated it are found by themselves.")
def export(checkpoint, out_arg, to, out, key, metrics) -> None:
    """Write the teacher backbone of CHECKPOINT (ours, or official DoRA/DINO) for timm, DINO's eval scripts,
    transformers, mmsegmentation, MAE/ViTDet-style loaders or SeqTrack."""

    from dora.checkpoint import EXPORT_FORMATS
    from dora.checkpoint import export as run_export
    from dora.export import claim_target, describe
    from pipeline.errors import InputError

    if to not in EXPORT_FORMATS:
        raise InputError(f"--to {to!r}: choose one of {', '.join(EXPORT_FORMATS)}")
    if out is not None and out_arg is not None and out != out_arg:
        raise InputError(f"two outputs given ({out_arg} and --out {out}); give OUT or --out PATH, not both")
    target = out or out_arg
    if target is None:
        raise InputError("no output given: add OUT after CHECKPOINT, or --out PATH")
    if metrics and to != "hf":
        raise InputError(f"--metrics goes into the hf model card; --to {to} files have no place for it")
    made = claim_target(to, target)
    try:
        path = run_export(checkpoint, to, target, key, metrics)
    finally:
        remove_empty(made)  # a refused export leaves no folder it made
    if to == "timm":
        click.echo(f"{path}: timm.create_model(ARCH, pretrained=True, num_classes=0, "
                   f"pretrained_cfg_overlay=dict(file='{path}'))")
    elif to == "dino":
        click.echo(f"{path}: DINO eval scripts: --pretrained_weights {path} --checkpoint_key teacher")
    else:
        click.echo(describe(to, path))


if __name__ == "__main__":
    main()
