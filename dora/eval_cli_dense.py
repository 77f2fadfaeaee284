"""`dora-eval segment CKPT --data ROOT`: the dense evaluation that runs on one machine.

A linear semantic-segmentation probe of the frozen backbone (dinov2's linear ADE20K protocol:
dora/eval/segment.py), on ADE20K or any folder with images/, annotations/ and classes.txt
(dora/eval/seg_data.py), scored as mmseg scores (dora/eval/seg_metrics.py). Registered on the
`dora-eval` group by dora/eval_cli.py.
"""

from __future__ import annotations

from pathlib import Path

import click

from pipeline.errors import InputError
from pipeline.files import claims_output
from pipeline.workers import usable_cores

# --workers default of every dora-eval command: the cores this process may use, at most 16 (more readers
# do not help one GPU)
CORES = min(16, usable_cores())


@click.command()
@click.argument("checkpoint", type=click.Path(path_type=Path))
@click.option("--data", type=click.Path(path_type=Path), required=True,
              help="ADE20K (ROOT/ADEChallengeData2016 or that folder) or ROOT with images/{train,val}/, "
                   "annotations/{train,val}/ (PNG class indices, 255 ignored) and classes.txt.")
@click.option("--out", type=click.Path(path_type=Path), default=Path("runs/eval/segment"), show_default=True,
              help="Run folder: checkpoint.pth (resumed when present), metrics.jsonl, metrics.json, segment_sheet.png.")
@click.option("--features", type=click.Choice(["last", "last4", "last4-patch"]), default="last", show_default=True,
              help="last: last block's patch tokens (dinov2 linear); last4: last 4 blocks' patch tokens + [CLS]; "
                   "last4-patch: without [CLS] (dinov2's +ms head input).")
@click.option("--crop", type=click.IntRange(min=16), default=512, show_default=True,
              help="Training crop; validation rescales the short side to it and slides crop windows.")
@click.option("--ratio-range", type=(click.FloatRange(min=0, min_open=True), click.FloatRange(min=0, min_open=True)),
              default=(0.5, 2.0), show_default=True, help="Training rescale: short side = crop x U(MIN, MAX).")
@click.option("--cat-max-ratio", type=click.FloatRange(min=0, max=1, min_open=True), default=0.75, show_default=True,
              help="Random crops are re-drawn (10 tries) while one class covers this share (1: never).")
@click.option("--iters", type=click.IntRange(min=1), default=None, help="Training iterations  [default: 40000]")
@click.option("--epochs", type=click.IntRange(min=1), default=None, help="Or passes over the train split.")
@click.option("--warmup-iters", type=click.IntRange(min=0), default=None,
              help="Linear warm-up  [default: 3.75%% of the iterations, dinov2's 1500 of 40000]")
@click.option("--batch-size", type=click.IntRange(min=1), default=16, show_default=True, help="dinov2: 8 x 2.")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=1e-3, show_default=True, help="AdamW.")
@click.option("--weight-decay", type=click.FloatRange(min=0), default=1e-4, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--save-every", type=click.IntRange(min=1), default=500, show_default=True,
              help="Iterations between resumable checkpoints.")
@click.option("--sheet", "sheet_n", type=click.IntRange(min=0), default=6, show_default=True,
              help="Validation images drawn in segment_sheet.png.")
@click.option("--key", type=click.Choice(["teacher", "student"]), default="teacher", show_default=True)
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--workers", type=click.IntRange(min=0), default=CORES, show_default=True, help="DataLoader workers.")
@click.option("--precision", type=click.Choice(["fp32", "bf16", "fp16"]), default="fp32", show_default=True,
              help="Backbone forward precision on a GPU (the head is fp32).")
@click.option("--config", type=click.Path(path_type=Path), default=None,
              help="Model config [default: the checkpoint's, or read off the weights]")
@click.option("--restart", is_flag=True, help="Start again in --out (by default a run resumes only what the same "
              "checkpoint content and options produced, and refuses anything else).")
@click.option("--json", "echo_json", is_flag=True, help="Also print metrics.json.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
@claims_output()
def segment(checkpoint, data, out, features, crop, ratio_range, cat_max_ratio, iters, epochs, warmup_iters,
            batch_size, lr, weight_decay, seed, save_every, sheet_n, key, device, workers, precision, config,
            restart, echo_json, quiet) -> None:
    """Linear semantic-segmentation probe on frozen patch tokens (dinov2's linear protocol); mIoU as mmseg."""

    from dataclasses import asdict

    from dora.eval import (
        RunRecord,
        SegmentProbe,
        SegParams,
        load_encoder,
        load_seg_layout,
        pick_device,
        seg_iters,
        seg_warmup,
    )

    say = lambda m: click.echo(m, err=True)  # noqa: E731
    if ratio_range[0] > ratio_range[1]:
        raise InputError(f"--ratio-range {ratio_range[0]} {ratio_range[1]}: give MIN MAX with MIN <= MAX")
    layout = load_seg_layout(data)
    n_iters = seg_iters(epochs, iters, len(layout.train), batch_size)
    warmup = seg_warmup(n_iters) if warmup_iters is None else warmup_iters
    if warmup > n_iters:
        raise InputError(f"--warmup-iters {warmup} is more than the run's {n_iters} iterations")
    enc = load_encoder(checkpoint, key, pick_device(device), config)
    p = SegParams(features=features, crop=crop, ratio=tuple(ratio_range), cat_max_ratio=cat_max_ratio,
                  iters=n_iters, warmup_iters=warmup, batch_size=batch_size, lr=lr, weight_decay=weight_decay,
                  seed=seed, save_every=save_every, precision=enc.run_precision(precision, say), workers=workers)
    feature = {"last": "last-block patch tokens after the final norm",
               "last4": "last 4 blocks' patch tokens + [CLS] (broadcast) after the final norm",
               "last4-patch": "last 4 blocks' patch tokens after the final norm"}[features]
    record = RunRecord("segment", enc, feature, {
        "data": str(data), **asdict(p), "stride": p.stride, "head": "BatchNorm2d + 1x1 Conv2d (dinov2 BNHead)",
        "optimizer": "AdamW betas (0.9, 0.999)", "schedule": "linear warm-up from 1e-6 x lr, then poly (power 1) to 0",
        "loss": "cross-entropy, ignore 255, mean over all pixels (mmseg avg_non_ignore=False)",
        "train_transform": "rescale short side crop x U(ratio), random crop (cat_max_ratio), flip, pad 0/255",
        "eval": f"short side {crop}, slide {crop}/{p.stride}, logits resized to the label size"})
    res = SegmentProbe(enc, layout, out, p, quiet, say=say, restart=restart, sheet_n=sheet_n).fit()
    r = record.write(out, echo_json, **res)["results"]

    def pct(v):
        return "n/a" if v is None else f"{v:.2f}"

    click.echo(f"segment: mIoU {pct(r['mIoU'])}  mAcc {pct(r['mAcc'])}  aAcc {pct(r['aAcc'])} "
               f"({res['n_val']} val images, {r['n_classes_scored']} classes scored)", err=echo_json)
    click.echo(f"wrote {Path(out) / 'metrics.json'}", err=True)
