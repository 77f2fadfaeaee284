"""Warnings about a finished shard folder that is valid but will not train as its maker may expect:
videos that give no clip, videos stored above their own frame rate, videos left out or unfinished.

`dora-data shard` prints the clip warnings in its summary, `dora-data verify` prints all of them.
"""

from __future__ import annotations

from pipeline.dataset.clips import ClipSpec, clip_rows
from pipeline.dataset.reader import Dataset
from pipeline.format import describe_unfinished


def clip_spec(ds: Dataset) -> ClipSpec:
    """The clip shape the folder was sharded for (its --clip-frames and --clip-stride-s)."""
    st = ds.meta["settings"]
    return ClipSpec(int(st["clip_frames"]), float(st["clip_stride_s"]))


def clipless_videos(ds: Dataset) -> list[str]:
    """One warning per video with no valid clip: every one of its shots is shorter than one clip."""
    spec = clip_spec(ds)
    span = (spec.frames - 1) * spec.stride_s
    out = []
    for v in ds.videos:
        tab = ds.table(v["name"])
        if len(clip_rows(tab.t, tab.shot, float(v["fps_stored"]), spec)):
            continue
        longest = max((e - s for s, e in v["shots"]), default=0.0)
        out.append(f"{v['name']}: 0 clips: each of its {len(v['shots'])} shot(s) is shorter than one clip of "
                   f"{spec.frames} frames {spec.stride_s:g} s apart ({span:.1f} s; the longest shot is "
                   f"{longest:.1f} s), so training with that clip shape within shots never draws from it; "
                   "shard with fewer --clip-frames or a "
                   "smaller --clip-stride-s to use it")
    return out


def fps_warning(name: str, source_fps: float, fps: float) -> str | None:
    """The warning for a source whose frame rate is below the stored --fps (None when it is not)."""
    if source_fps >= fps * 0.999:
        return None
    return (f"{name}: the source has {source_fps:.3g} frames/s, fewer than --fps {fps:g}: about "
            f"{1 - source_fps / fps:.0%} of its stored frames repeat the frame before; use --fps {source_fps:.3g} "
            "or lower to store each frame once")


def dataset_warnings(ds: Dataset) -> list[str]:
    """Every warning about the folder: clipless videos, frame rates, dropped and unfinished videos."""
    fps = float(ds.meta["settings"]["fps"])
    out = clipless_videos(ds)
    out += [w for v in ds.videos if (w := fps_warning(v["name"], float(v["fps_source"]), fps))]
    for d in ds.meta.get("dropped", []):
        out.append(f"{d['name']}: not in this dataset: dropped by `dora-data index --drop-incomplete` with "
                   f"{d['units_done']} of {d['n_units']} work units done (source {d['source']})")
    indexed = {v["name"] for v in ds.videos}
    unfinished = [v for v in ds.folder.work_videos(exclude=indexed) if not v.complete]
    if unfinished:
        out.append(f"{describe_unfinished(unfinished)} and not in dataset.json yet: rerun `dora-data shard` with "
                   f"the same inputs and options (--out {ds.root}) to finish and add them")
    return out
