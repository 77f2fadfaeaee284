"""`dora-eval`: look at what a checkpoint learned.

  attention CKPT IMAGE... --out DIR   the teacher's last-block [CLS] attention, one map per head
                                      (as in DINO's and the paper's attention figures)
  davis CKPT --davis ROOT             DAVIS-2017 video object segmentation (DINO's label propagation),
                                      J&F as davis2017-evaluation; --eval-only RESULTS scores PNGs
  discovery CKPT --voc ROOT           LOST CorLoc on Pascal VOC, [CLS]-attention Jaccard on VOC12
  tracking CKPT --shards DIR --out DIR
                                      clips drawn as in training, with the k objects DoRA discovers
                                      in the first frame tracked through the clip (like Figure 4)
  knn CKPT --data ROOT                weighted k-NN top-1/top-5 on frozen [CLS] features (DINO's protocol)
  linear CKPT --data ROOT             linear probe on the last 4 blocks' [CLS] (DINO's protocol), resumable
CKPT: a `dora-train` checkpoint, a run folder (its newest checkpoint), an export, or an official DoRA/DINO
checkpoint. DIR defaults to runs/eval.
"""

from __future__ import annotations

from pathlib import Path

import click
import torch

from dora.eval import attention_sheet, teacher_model
from dora.eval_cli_dense import CORES, segment
from pipeline.cli_errors import OneLineGroup, version_option
from pipeline.errors import InputError
from pipeline.files import claims_output
from pipeline.format import ShardFolder


@click.group(cls=OneLineGroup, context_settings={"help_option_names": ["-h", "--help"]})
@version_option("dora-eval")
def main() -> None:
    """Look at what a DoRA (or DINO) checkpoint learned."""


@main.command()
@click.argument("checkpoint", type=click.Path(path_type=Path))
@click.argument("images", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), default=Path("runs/eval"), show_default=True)
@click.option("--size", type=click.IntRange(min=32), default=480, show_default=True, help="Short side of the input.")
@click.option("--config", type=click.Path(path_type=Path), default=None, help="[default: the checkpoint's]")
@claims_output()
def attention(checkpoint, images, out, size, config) -> None:
    """Last-block [CLS] attention of every head, for each image, as PNG."""

    model, _ = teacher_model(checkpoint, config, ())
    out.mkdir(parents=True, exist_ok=True)
    for image in images:
        click.echo(str(attention_sheet(model, image, out, size)))


DEVICE = click.Choice(["auto", "cpu", "cuda"])
KEY = click.Choice(["teacher", "student"])


def _sequence_names(values: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(n for v in values for n in v.split(",") if n)


@main.command()
@click.argument("checkpoint", required=False, type=click.Path(path_type=Path))
@click.option("--davis", "root", required=True, type=click.Path(path_type=Path), help="DAVIS-2017 folder.")
@click.option("--split", default="val", show_default=True, help="ImageSets/2017/<split>.txt")
@click.option("--sequences", multiple=True, help="Only these sequences (repeat or comma-separate).")
@click.option("--key", type=KEY, default="teacher", show_default=True)
@click.option("--device", type=DEVICE, default="auto", show_default=True)
@click.option("--out", type=click.Path(path_type=Path), default=Path("runs/eval/davis"), show_default=True)
@click.option("--json", "echo_json", is_flag=True, help="Also print metrics.json.")
@click.option("--eval-only", "eval_only", type=click.Path(path_type=Path), default=None,
              help="Score the PNGs in this results folder; no checkpoint needed.")
@click.option("--batch-size", type=click.IntRange(min=1), default=8, show_default=True, help="Frames per forward.")
@click.option("--workers", type=click.IntRange(min=0), default=CORES, show_default=True, help="Frame-reading threads.")
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
@click.option("--no-score", is_flag=True, help="Only write the PNGs (splits annotated on the first frame only).")
@click.option("--restart", is_flag=True, help="Replace an earlier run's results in --out (else resumed if the same).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@claims_output()
def davis(checkpoint, root, split, sequences, key, device, out, echo_json, eval_only, batch_size, workers, config,
          short_side, multiple, n_last, radius, topk, temperature, bound_th, no_score, restart, quiet) -> None:
    """DAVIS-2017 video object segmentation by DINO's label propagation; J&F as davis2017-evaluation."""

    import json

    from dora.eval import (
        PropagationCfg,
        RunRecord,
        check_scorable,
        load_encoder,
        pick_device,
        read_sequences,
        run_davis,
        score_results,
    )
    from pipeline.files import write_json_atomic

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
    if not no_score:
        check_scorable(seqs, " (or give --no-score to only write the propagated PNGs)")  # before any work
    cfg = PropagationCfg(short_side=short_side, multiple=multiple, n_last=n_last, radius=radius, topk=topk,
                         temperature=temperature)
    enc = load_encoder(checkpoint, key, pick_device(device), config)
    params = {**cfg.as_dict(), "split": split, "sequences": [s.name for s in seqs], "batch_size": batch_size,
              "bound_th": bound_th, "davis": str(root)}
    record = RunRecord("davis", enc, "last-block patch tokens after the final norm", params)
    stamp = {"checkpoint_sha256": record.as_dict()["checkpoint_sha256"], "key": key, **cfg.as_dict()}
    counts = run_davis(enc, seqs, out, cfg, batch_size, workers, stamp, quiet, restart)
    scores = {"scored": False} if no_score else score_results(seqs, out, bound_th)
    data = record.write(out, False, **counts, **scores)
    if no_score:
        click.echo(json.dumps(data, indent=1) if echo_json else f"{counts['n_frames']} frames written to {out}")
    else:
        _davis_summary(data, echo_json)


def _davis_summary(data: dict, echo_json: bool) -> None:
    import json

    if echo_json:
        click.echo(json.dumps(data, indent=1))
    else:
        keys = ["J&F-Mean", "J-Mean", "J-Recall", "J-Decay", "F-Mean", "F-Recall", "F-Decay"]
        click.echo("  ".join(f"{k} {data[k]:.3f}" for k in keys))


@main.command()
@click.argument("checkpoint", type=click.Path(path_type=Path))
@click.option("--voc", "root", required=True, type=click.Path(path_type=Path),
              help="Pascal VOC folder (VOCdevkit, VOC<year> or one with JPEGImages/Annotations/ImageSets).")
@click.option("--year", type=click.Choice(["2007", "2012"]), default="2012", show_default=True)
@click.option("--set", "image_set", default="val", show_default=True, help="trainval, val, train or test.")
@click.option("--image-list", type=click.Choice(["Main", "Segmentation"]), default="Main", show_default=True,
              help="ImageSets/<list>/<set>.txt (the paper's 1,449 VOC12 val images: Segmentation).")
@click.option("--k-patches", type=click.IntRange(min=1), default=100, show_default=True, help="LOST's k.")
@click.option("--jaccard/--no-jaccard", default=None,
              help="[CLS]-attention Jaccard on VOC12 ImageSets/Segmentation/val  [default: on for 2012]")
@click.option("--jaccard-mask", type=click.Choice(["mean80", "heads60"]), default="mean80", show_default=True,
              help="mean80: head-averaged map, 80%% of the mass (paper); heads60: per head, 60%% (DINO).")
@click.option("--jaccard-size", type=click.IntRange(min=0), default=0, show_default=True,
              help="Resize to SIZE x SIZE before the Jaccard (0: native size).")
@click.option("--sheet", "sheet_n", type=click.IntRange(min=0), default=16, show_default=True,
              help="Images drawn in corloc_sheet.png.")
@click.option("--key", type=KEY, default="teacher", show_default=True)
@click.option("--device", type=DEVICE, default="auto", show_default=True)
@click.option("--workers", type=click.IntRange(min=0), default=CORES, show_default=True, help="Image-reading threads.")
@click.option("--out", type=click.Path(path_type=Path), default=Path("runs/eval/discovery"), show_default=True)
@click.option("--json", "echo_json", is_flag=True, help="Also print metrics.json.")
@click.option("--config", type=click.Path(path_type=Path), default=None, help="Model YAML for files without one.")
@click.option("--restart", is_flag=True, help="Replace an earlier run's results in --out (else resumed if the same).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@claims_output()
def discovery(checkpoint, root, year, image_set, image_list, k_patches, jaccard, jaccard_mask, jaccard_size, sheet_n,
              key, device, workers, out, echo_json, config, restart, quiet) -> None:
    """Unsupervised object discovery: LOST CorLoc on VOC and [CLS]-attention Jaccard on VOC12 segmentation."""

    import json

    from dora.eval import (
        DISCOVERY_MEAN,
        DISCOVERY_STD,
        RunRecord,
        load_encoder,
        pick_device,
        read_detection,
        read_segmentation,
        run_corloc,
        run_jaccard,
    )
    from dora.model import QKTap

    year_i = int(year)
    do_jaccard = (year_i == 2012) if jaccard is None else jaccard
    if do_jaccard and year_i != 2012:
        raise InputError("--jaccard uses VOC 2012 segmentation val: give --year 2012 (or --no-jaccard)")
    images = read_detection(root, year_i, image_set, image_list)
    seg = read_segmentation(root, "val") if do_jaccard else []
    enc = load_encoder(checkpoint, key, pick_device(device), config)
    params = {"voc": str(root), "year": year_i, "set": image_set, "image_list": image_list,
              "k_patches": k_patches, "features": "k", "iou_threshold": 0.5,
              "mean": DISCOVERY_MEAN, "std": DISCOVERY_STD,
              "jaccard": do_jaccard, "jaccard_mask": jaccard_mask if do_jaccard else None,
              "jaccard_size": jaccard_size if do_jaccard else None}
    record = RunRecord("discovery", enc, "last-block keys (LOST); last-block [CLS] attention (Jaccard)",
                       params)
    common = {"checkpoint_sha256": record.as_dict()["checkpoint_sha256"], "key": key}
    stamp_c = {**common, **{k: params[k] for k in ("voc", "year", "set", "image_list", "k_patches")}}
    stamp_j = {**common, "voc": str(root), "mask": jaccard_mask, "size": jaccard_size}
    out.mkdir(parents=True, exist_ok=True)
    for stale in ("metrics.json", "boxes.json", "corloc_sheet.png") if restart else ():  # the earlier run's
        (out / stale).unlink(missing_ok=True)
    tap = QKTap(enc.model)
    results = {"corloc": run_corloc(enc, tap, images, out, k_patches, workers, sheet_n, stamp_c, quiet, restart)}
    results["jaccard"] = (run_jaccard(enc, tap, seg, out, jaccard_mask, jaccard_size, workers, stamp_j, quiet, restart)
                          if do_jaccard else {"ran": False, "why": "off (--no-jaccard or --year 2007)"})
    data = record.write(out, False, **results)
    if echo_json:
        click.echo(json.dumps(data, indent=1))
    else:
        c, j = results["corloc"], results["jaccard"]
        line = f"CorLoc {c['corloc']:.2f} ({c['n_correct']}/{c['n_images']})"
        if "jaccard" in j:
            line += f"  Jaccard[{j['jaccard_mask']}] {j['jaccard']:.2f} ({j['n_images']} images)"
        click.echo(line)


@main.command()
@click.argument("checkpoint", type=click.Path(path_type=Path))
@click.option("--shards", required=True, type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), default=Path("runs/eval"), show_default=True)
@click.option("--n", "n", type=click.IntRange(min=1), default=4, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--size", type=click.IntRange(min=1), default=None,
              help="Short side of the teacher's input, in px  [default: the config's data.global_size]")
@click.option("--width", type=click.IntRange(min=64), default=480, show_default=True,
              help="Each frame is drawn at least this wide.")
@click.option("--config", type=click.Path(path_type=Path), default=None, help="[default: the checkpoint's]")
@claims_output()
def tracking(checkpoint, shards, out, n, seed, size, width, config) -> None:
    """N clips with their tracked objects overlaid per frame, as PNG (like the paper's Figure 4).

    The clips are those training would draw first; their frames are read un-augmented from the shards,
    resized (sides multiples of the patch size) for the teacher, and the maps drawn on the stored frames."""

    from dora.data import BatchSource
    from dora.train import teacher_frames, tracking_sheet

    ShardFolder(shards).require_finished()
    model, cfg = teacher_model(checkpoint, config, (f"train.seed={seed}", f"train.batch_size={n}"))
    if cfg.dora.method != "dora":
        raise InputError("the config's dora.method is dino: there is nothing to track")
    hb = BatchSource.from_config([str(shards)], cfg)(0)
    short = size or cfg.data.global_size
    out.mkdir(parents=True, exist_ok=True)
    for i, (clip, jpegs) in enumerate(zip(hb.clips, hb.jpegs, strict=True)):
        try:
            frames, x = teacher_frames(jpegs, short, model.patch)
        except OSError as e:
            raise InputError(f"{shards}: {clip.video} t={clip.times[0]:.2f}s: a stored frame does not decode "
                             f"({e}); run `dora-data verify`") from None
        with torch.no_grad():
            _, maps, heads = model.track_objects(x[None, :, None])
        grid = (x.shape[-2] // model.patch, x.shape[-1] // model.patch)
        k = maps.shape[3]
        title = (f"clip {i}: {clip.video}, frames {clip.frame_index[0]}-{clip.frame_index[-1]} (un-augmented, "
                 f"teacher input {x.shape[-1]}x{x.shape[-2]}): k={k} objects discovered in frame 1, tracked")
        objects = [f"object {j + 1} (head {h})" for j, h in enumerate(heads.tolist())] \
            if cfg.dora.mask_source == "object" else None  # else the maps are not the heads' (random blocks)
        path = tracking_sheet(frames, maps[0, :, 0], grid, out / f"tracking_{i:02d}.png", title,
                              times=list(clip.times), objects=objects, width=width)
        click.echo(str(path))


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
            click.option("--key", type=KEY, default="teacher", show_default=True),
            click.option("--device", type=DEVICE, default="auto", show_default=True),
            click.option("--batch-size", type=click.IntRange(min=1), default=default_batch, show_default=True),
            click.option("--workers", type=click.IntRange(min=0), default=CORES, show_default=True,
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
@click.option("--out", type=click.Path(path_type=Path), default=Path("runs/eval/knn"), show_default=True)
@click.option("--k", "ks", type=click.IntRange(min=1), multiple=True, default=(10, 20, 100, 200), show_default=True,
              help="Neighbours: --k 10 20 100 200 (or --k 10 --k 20 ...).")
@click.option("--temperature", type=click.FloatRange(min=0, min_open=True), default=0.07, show_default=True)
@click.option("--dump-features", type=click.Path(path_type=Path), default=None,
              help="Write DINO's trainfeat/testfeat/trainlabels/testlabels .pth files here.")
@click.option("--load-features", type=click.Path(path_type=Path), default=None,
              help="Read those four files instead of extracting features.")
@eval_options(default_batch=256)
@claims_output(dirs=("dump_features",))
def knn(checkpoint, data, out, ks, temperature, dump_features, load_features, key, device, batch_size, workers,
        decoder, precision, resize, crop, config, echo_json, quiet) -> None:
    """Weighted k-NN top-1/top-5 on frozen [CLS] features (DINO's eval_knn.py protocol)."""

    from dora.eval import RunRecord, check_sizes, choose_decoder, load_encoder, pick_device, plot_knn, run_knn

    check_sizes(resize, crop)
    dev = pick_device(device)
    dec = choose_decoder(decoder) if load_features is None else "none"
    enc = load_encoder(checkpoint, key, dev, config)
    precision = enc.run_precision(precision, lambda m: click.echo(m, err=True)) if load_features is None else "none"
    params = {"data": str(data) if data else None, "k": list(ks), "temperature": temperature,
              "batch_size": batch_size, "workers": workers, "decoder": dec, "precision": precision,
              "resize": resize, "crop": crop, "interpolation": "bicubic",
              "dump_features": str(dump_features) if dump_features else None,
              "load_features": str(load_features) if load_features else None}
    record = RunRecord("knn", enc, "cls_after_norm", params)
    res = run_knn(enc, data, list(ks), temperature, batch_size, workers, dec, precision, resize, crop,
                       dump_features, load_features, quiet, say=lambda m: click.echo(m, err=True))
    plot_knn(res["results"], Path(out) / "knn.png", f"k-NN, T={temperature}: {Path(checkpoint).name}")
    data_out = record.write(out, echo_json, **res)
    for k, r in data_out["results"].items():
        click.echo(f"{k}-NN: top-1 {r['top1']:.2f}  top-5 {r['top5']:.2f}", err=echo_json)
    click.echo(f"wrote {Path(out) / 'metrics.json'}", err=True)


@main.command()
@click.argument("checkpoint", type=click.Path(path_type=Path))
@click.option("--data", type=click.Path(path_type=Path), required=True,
              help="ROOT with train/<class>/ and val/<class>/ images (ImageFolder layout).")
@click.option("--out", type=click.Path(path_type=Path), default=Path("runs/eval/linear"), show_default=True,
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
@click.option("--restart", is_flag=True, help="Start again in --out (by default a run resumes only what the same "
              "checkpoint content and options produced, and refuses anything else).")
@eval_options(default_batch=1024)
@claims_output()
def linear(checkpoint, data, out, epochs, lr, n_last_blocks, avgpool, cached_features, seed, restart, key, device,
           batch_size, workers, decoder, precision, resize, crop, config, echo_json, quiet) -> None:
    """Linear probe on frozen features (DINO's eval_linear.py protocol); resumes after a kill."""

    from dataclasses import asdict

    from dora.eval import (
        LinearParams,
        LinearProbe,
        RunRecord,
        check_sizes,
        choose_decoder,
        load_encoder,
        pick_device,
    )

    check_sizes(resize, crop)
    dev = pick_device(device)
    enc = load_encoder(checkpoint, key, dev, config)
    p = LinearParams(epochs=epochs, lr=lr, batch_size=batch_size, n_last_blocks=n_last_blocks, avgpool=avgpool,
                     cached=cached_features, seed=seed, workers=workers, decoder=choose_decoder(decoder),
                     precision=enc.run_precision(precision, lambda m: click.echo(m, err=True)), resize=resize,
                     crop=crop)
    feature = f"cls_last{n_last_blocks}_after_norm" + ("+patch_mean" if avgpool else "")
    record = RunRecord("linear", enc, feature, {"data": str(data), **asdict(p), "momentum": 0.9,
                                                "weight_decay": 0.0, "schedule": "cosine per epoch to 0",
                                                "train_transform": f"RandomResizedCrop+flip ({p.decoder})"})
    res = LinearProbe(enc, data, out, p, quiet, say=lambda m: click.echo(m, err=True), restart=restart).fit()
    r = record.write(out, echo_json, **res)["results"]
    click.echo(f"linear: best top-1 {r['best_top1']:.2f} (epoch {r['best_epoch']}), last {r['last_top1']:.2f}",
               err=echo_json)
    click.echo(f"wrote {Path(out) / 'metrics.json'}", err=True)


main.add_command(segment)
if __name__ == "__main__":
    main()
