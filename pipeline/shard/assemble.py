"""The final step (`dora-data index`): turn complete units into mixed shards, indexes and dataset.json.

A video whose units are not all complete (a killed or partial `shard`) stops the assembly, so that
dataset.json never silently lacks it; `--drop-incomplete` leaves such videos out on purpose.
Order of publication makes a kill at any moment harmless: shards are written under temporary
names and renamed, then frame tables, then `dataset.json` (the commit point), and only then are
the units deleted. A rerun after a kill repeats the same deterministic assembly.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

import numpy as np
from tqdm import tqdm

from pipeline.errors import InputError
from pipeline.files import write_json_atomic
from pipeline.format import (
    FORMAT_VERSION,
    FrameTable,
    ShardFolder,
    ShardWriter,
    WorkVideo,
    describe_unfinished,
    expected_files,
    file_entry,
    read_range,
)
from pipeline.format import index_path as dali_index_path
from pipeline.shard.cuts import shots_from_cuts
from pipeline.shard.settings import ShardSettings, WindowGeometry
from pipeline.shard.units import read_unit
from pipeline.video import sha256_of


@dataclass
class _Video:
    """A video whose units are all complete, gathered into one frame table (locations pending)."""

    meta: dict  # video.json written by `shard`
    table: FrameTable
    blob: np.ndarray  # unit number of each frame
    blob_offset: np.ndarray
    windows: list[tuple[int, int, int, int]] = field(default_factory=list)  # shot, w, row0, row1
    n_source_frames: int = 0


def _gather(out: Path, meta: dict, geometry: WindowGeometry) -> _Video:
    name = meta["name"]
    units = [read_unit(out, name, i) for i in range(meta["n_units"])]
    rows, cuts, base = [], [], 0
    for u in units:
        for t, local, off, size, faces, blurred in u["frames"]:
            rows.append((t, base + local, faces, blurred, u["unit"], off, size))
        cuts += u["cuts"]
        base += u["n_decoded"]
    info = meta["info"]
    last = [u for u in units if u["last_t"] is not None][-1]
    end = last["last_t"] + last["last_dt"]
    shots = np.array(shots_from_cuts(cuts, info["start_s"], end), np.float64).reshape(-1, 2)
    arr = np.array(rows, dtype=np.float64).reshape(-1, 7)
    t = arr[:, 0]
    shot = (np.searchsorted(shots[1:, 0], t, side="right")).astype(np.int32)
    n = len(t)
    table = FrameTable(t=t, index=arr[:, 1].astype(np.int64), shot=shot, faces=arr[:, 2].astype(np.int16),
                       blurred=arr[:, 3].astype(np.int16), shard=np.full(n, -1, np.int32),
                       offset=np.zeros(n, np.int64), size=arr[:, 6].astype(np.int32), shots=shots)
    video = _Video(meta, table, arr[:, 4].astype(np.int32), arr[:, 5].astype(np.int64), n_source_frames=base)
    for s in range(len(shots)):
        r0, r1 = np.searchsorted(shot, [s, s + 1])
        for w, (a, b) in enumerate(geometry.windows(int(r1 - r0))):
            if b > a:
                video.windows.append((s, w, int(r0 + a), int(r0 + b)))
    return video


def pending_videos(out: Path, done: set[str]) -> tuple[list[dict], list[WorkVideo]]:
    """(records of videos whose units are all complete, videos still missing units), both not in `done`."""
    videos = ShardFolder(out).work_videos(exclude=done)
    return [v.record for v in videos if v.complete], [v for v in videos if not v.complete]


class IncompleteVideos(InputError):
    """Catalogued videos miss work units: assembling now would leave them out of dataset.json silently."""


def refuse_incomplete(out: Path, waiting: list[WorkVideo]) -> NoReturn:
    """One line: which videos are unfinished and the two ways on (finish them, or drop them explicitly)."""
    sources = ", ".join(v.source for v in waiting[:4])
    raise IncompleteVideos(
        f"{out}: {describe_unfinished(waiting)}; rerun shard: `dora-data shard` with the same inputs and options "
        f"(--out {out}; it resumes and gives the same bytes; sources: {sources}); or leave them out with "
        f"`dora-data index {out} --drop-incomplete`")


def drop_unfinished(out: Path) -> list[WorkVideo]:
    """`index --drop-incomplete`: delete the work of every catalogued video that misses units, and return
    them (for the user and dataset.json's "dropped"). Refused when no complete video would remain."""
    folder = ShardFolder(out)
    indexed = folder.indexed_names()
    videos = folder.work_videos(exclude=indexed)
    unfinished = [v for v in videos if not v.complete]
    if unfinished and not indexed and len(unfinished) == len(videos):
        raise InputError(f"{out}: no video is complete, nothing would remain to index "
                         f"({describe_unfinished(unfinished)}); rerun shard: `dora-data shard` with the same inputs "
                         f"and options (--out {out})")
    for v in unfinished:
        shutil.rmtree(folder.video_work(v.name))
    return unfinished


def assemble(out: Path, settings: ShardSettings, quiet: bool = False, dropped: list[WorkVideo] = ()) -> dict:
    """Write shards for every video whose units are complete; returns the new dataset.json.

    While a catalogued video misses units (a killed or partial `shard`), nothing is written and
    IncompleteVideos is raised (`drop_unfinished` first removes such videos on request; `dropped`
    names them in dataset.json, so that the dataset says what it lacks).
    """
    folder = ShardFolder(out)
    index_path = folder.index
    index = folder.read_index() or {
        "format": FORMAT_VERSION, "settings": settings.to_json(), "videos": [], "shards": []}
    done = {v["name"] for v in index["videos"]}
    _drop_leftovers(out, done)
    ready, waiting = pending_videos(out, done)
    if waiting:
        refuse_incomplete(out, waiting)
    index["pending"] = []
    if dropped:
        index["dropped"] = index.get("dropped", []) + [
            {"name": v.name, "source": v.source, "units_done": v.done, "n_units": v.total} for v in dropped]
    if index.get("dropped"):  # a dropped video sharded again later is no longer dropped
        now = done | {meta["name"] for meta in ready}
        index["dropped"] = [d for d in index["dropped"] if d["name"] not in now]
    if not ready:
        if index["videos"]:
            write_json_atomic(index_path, index)
        return index
    fps = settings.fps
    geometry = WindowGeometry.from_settings(settings, fps)
    videos = [_gather(out, meta, geometry) for meta in ready]
    order = [(v, *w) for v in range(len(videos)) for w in videos[v].windows]
    rng = np.random.default_rng([settings.seed, len(index["shards"])])
    order = [order[i] for i in rng.permutation(len(order))]
    folder.shards_dir.mkdir(exist_ok=True)
    folder.frames_dir.mkdir(exist_ok=True)
    known = expected_files(index)  # before the new videos: a folder made before `files` keeps its shard sizes
    new_shards = _write_shards(out, videos, order, settings, len(index["shards"]), quiet)
    for v in videos:
        name = v.meta["name"]
        v.table.save(out / folder.frames_table_name(name))
        index["videos"].append(_video_entry(out, v, geometry))
    index["shards"] += new_shards
    new_files = [f"shards/{s['name']}" for s in new_shards] + [
        f"shards/{dali_index_path(Path(s['name'])).name}" for s in new_shards] + [
        folder.frames_table_name(v.meta["name"]) for v in videos]
    index["files"] = {**known, **{rel: file_entry(out / rel) for rel in new_files}}
    stored = sum(s["frame_bytes"] for s in index["shards"])
    distinct = sum(v["frame_bytes"] for v in index["videos"])
    index["duplication"] = round(stored / max(distinct, 1), 4)
    index["window"] = {"length_frames": geometry.length, "hop_frames": geometry.hop}
    write_json_atomic(index_path, index)
    _drop_leftovers(out, {v["name"] for v in index["videos"]})
    return index


def _write_shards(out: Path, videos: list[_Video], order: list, settings: ShardSettings, first: int,
                  quiet: bool) -> list[dict]:
    shards: list[dict] = []
    writer: ShardWriter | None = None
    stats: dict = {}

    def close() -> None:
        size = writer.close()
        shards.append({"name": writer.path.name, "n_samples": len(writer.samples), "bytes": size, **stats})

    hop = WindowGeometry.from_settings(settings, settings.fps).hop
    total = sum(r1 - r0 for (_, _, _, r0, r1) in order)
    bar = tqdm(total=total, unit="frame", desc="shards", disable=quiet, dynamic_ncols=True)
    try:
        for v, shot, w, r0, r1 in order:
            video = videos[v]
            name = video.meta["name"]
            tab = video.table
            blob = ShardFolder(out).unit_blob
            frames = [read_range(blob(name, int(video.blob[r])), int(video.blob_offset[r]), int(tab.size[r]))
                      for r in range(r0, r1)]
            sample_bytes = sum(map(len, frames)) + 1024 * (r1 - r0 + 2)
            if writer is not None and writer.bytes_written + sample_bytes > settings.shard_bytes and writer.samples:
                close()
                writer = None
            if writer is None:
                writer = ShardWriter(ShardFolder(out).shards_dir / ShardFolder.shard_name(first + len(shards)))
                stats = {"n_frames": 0, "frame_bytes": 0, "videos": []}
            last = r1 == int(np.searchsorted(tab.shot, shot + 1))
            header = {"video": name, "shot": shot, "window": w,
                      "t": tab.t[r0:r1].tolist(), "index": tab.index[r0:r1].tolist(),
                      "faces": tab.faces[r0:r1].tolist(), "blurred": tab.blurred[r0:r1].tolist(),
                      "owned_starts": [0, (r1 - r0) if last else min(hop, r1 - r0)]}
            comps = [("json", json.dumps(header).encode())] + [(f"{i:04d}.jpg", f) for i, f in enumerate(frames)]
            members = writer.add_sample(f"{name}_s{shot:05d}_w{w:04d}", comps)
            for r, m in zip(range(r0, r1), members[1:], strict=True):
                if tab.shard[r] < 0:
                    tab.shard[r], tab.offset[r] = first + len(shards), m.offset
            stats["n_frames"] += r1 - r0
            stats["frame_bytes"] += sum(map(len, frames))
            if name not in stats["videos"]:
                stats["videos"].append(name)
            bar.update(r1 - r0)
        if writer is not None:
            close()
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    finally:
        bar.close()
    return shards


def _video_entry(out: Path, v: _Video, geometry: WindowGeometry) -> dict:
    meta, tab, info = v.meta, v.table, v.meta["info"]
    source = Path(meta["source"])
    return {
        "name": meta["name"], "source": str(source),
        "sha256": _source_digest(out, meta),
        "source_bytes": meta["source_bytes"], "source_mtime_ns": meta["source_mtime_ns"],
        "codec": info["codec"], "duration_s": round(float(tab.shots[-1, 1] - tab.shots[0, 0]), 6),
        "fps_source": info["fps"], "fps_stored": min(meta["settings_fps"], info["fps"]),
        "size": meta["stored_size"], "source_size": [info["width"], info["height"]],
        "n_frames": len(tab), "n_source_frames": v.n_source_frames,
        "n_held_slots": int((np.diff(tab.index) == 0).sum()) if len(tab) else 0,
        "shots": tab.shots.tolist(), "n_windows": len(v.windows),
        "faces_blurred": int(tab.blurred.sum()), "frames_with_faces": int((tab.faces > 0).sum()),
        "frame_bytes": int(tab.size.sum()), "frames_table": ShardFolder.frames_table_name(meta["name"]),
    }


def _source_digest(out: Path, meta: dict) -> str:
    """The source's SHA-256: the checksum `shard` kept with unit 0 (of a file of the probed size: copies on
    other nodes have other paths and mtimes), so that `index` needs no access to the sources; else read
    from the source itself."""
    work = ShardFolder(out).video_work(meta["name"])
    kept = work / "source.json"
    if kept.exists():
        c = json.loads(kept.read_text())
        if c.get("size") == meta["source_bytes"]:
            return c["sha256"]
    source = Path(meta["source"])
    if not source.is_file():
        raise InputError(f"{source}: not found, and {meta['name']}'s unit 0 kept no checksum of it; run `dora-data "
                         "index` where the videos are, or rerun shard for that video")
    return sha256_of(source, work)


def _drop_leftovers(out: Path, done: set[str]) -> None:
    """Delete work folders of videos already in dataset.json (a kill after the commit point)."""
    for name in done:
        shutil.rmtree(ShardFolder(out).video_work(name), ignore_errors=True)
    work = ShardFolder(out).work
    if work.exists() and not any(p.is_dir() for p in work.iterdir()):
        shutil.rmtree(work, ignore_errors=True)
