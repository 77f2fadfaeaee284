"""`dora-train`: DoRA (or DINO) pretraining on shard folders, and `dora-train export`."""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

import click

from pipeline.cli_errors import DefaultCommandGroup
from pipeline.files import FolderLock

SHIPPED = Path(__file__).resolve().parents[1] / "configs"  # the repository's configs/ (an editable install)


def resolve_config(config: Path | None) -> Path | None:
    """--config as given when that file exists; otherwise the shipped config of the same name, so that
    `--config configs/dora_vits16.yaml` (or `dora_vits16`) works from any working folder."""
    if config is None or config.exists():
        return config
    shipped = SHIPPED / (config.name if config.suffix else f"{config.name}.yaml")
    return shipped if shipped.exists() else config


class TrainGroup(DefaultCommandGroup):
    interrupted_hint = "run the same command again to resume from the last checkpoint"


@click.group(cls=TrainGroup, context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """DoRA (or DINO) pretraining: `dora-train [train] --shards DIR ...`; `dora-train export CKPT ...`."""


@main.command(context_settings={"help_option_names": ["-h", "--help"], "ignore_unknown_options": False},
              epilog="Also: `dora-train export CHECKPOINT --to timm|dino OUT` writes the teacher backbone.")
@click.option("--shards", "shards", multiple=True, type=click.Path(path_type=Path),
              help="Shard folder from `dora-data shard` (repeat for several).")
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
def train(shards, images, config, output, resume, quiet, overrides) -> None:
    """Train DoRA on SHARDS (or DoRA* on IMAGES); OVERRIDES are key=value settings, e.g. train.batch_size=32."""

    from dora.config import load_config
    from dora.train import Trainer
    from pipeline.errors import InputError

    if bool(shards) == bool(images):
        raise InputError("give either --shards FOLDER (videos, from `dora-data shard`) or --images FOLDER "
                         "(DoRA*: a folder of JPEGs), not " + ("both" if shards else "neither"))
    path = resolve_config(config)
    cfg = load_config(path, overrides)
    run = output or Path("runs") / (path.stem if path else "default")
    first = int(os.environ.get("RANK", "0")) == 0  # torchrun: one lock per run, held by rank 0
    with FolderLock(run, "dora-train", hint="another --output") if first else contextlib.nullcontext():
        summary = Trainer([str(s) for s in shards], cfg, run, resume, quiet, images=images).fit(quiet=quiet)
    click.echo(json.dumps(summary))


@main.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("checkpoint", type=click.Path(path_type=Path))
@click.option("--to", "to", type=click.Choice(["timm", "dino"]), required=True)
@click.option("--key", default="teacher", show_default=True, help="Which network of the checkpoint.")
@click.argument("out", type=click.Path(path_type=Path))
def export(checkpoint, to, key, out) -> None:
    """Write the teacher backbone of CHECKPOINT (ours, or official DoRA/DINO) for timm or DINO's eval scripts."""

    from dora.checkpoint import export as run_export

    path = run_export(checkpoint, to, out, key)
    if to == "timm":
        click.echo(f"{path}: timm.create_model(ARCH, pretrained=True, num_classes=0, "
                   f"pretrained_cfg_overlay=dict(file='{path}'))")
    else:
        click.echo(f"{path}: DINO eval scripts: --pretrained_weights {path} --checkpoint_key teacher")


if __name__ == "__main__":
    main()
