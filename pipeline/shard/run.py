"""`dora-data shard`: probe inputs, run their work units in parallel, then assemble the shards."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from pipeline.dataset import fps_warning
from pipeline.errors import InputError
from pipeline.files import FolderLock, check_writable, write_json_atomic
from pipeline.format import ShardFolder, WorkVideo
from pipeline.shard.assemble import assemble, drop_unfinished, pending_videos, refuse_incomplete
from pipeline.shard.segment import process_unit
from pipeline.shard.settings import ShardSettings
from pipeline.shard.units import Unit, UnitWriter, is_complete, plan_units, select_part
from pipeline.store import MirroredFolder, StorageError
from pipeline.video import Source, VideoInfo, probe, resolve_inputs, sha256_of, stored_size
from pipeline.workers import ErrorPolicy, Task, failures, reraise, run_tasks, usable_cores


@dataclass
class ShardReport:
    index: dict | None = None  # dataset.json after assembly
    skipped: list[str] = field(default_factory=list)  # already in the folder
    failed: dict[str, str] = field(default_factory=dict)  # video name -> one-line error
    units_done: int = 0
    units_total: int = 0


def check_settings(out: Path, settings: ShardSettings) -> None:
    """A folder holds one set of shard options: refuse a rerun with different ones."""
    folder = ShardFolder(out)
    saved = folder.saved_settings()
    if saved is not None:
        diff = ShardSettings.from_json(saved).differences(settings)
        if diff:
            raise InputError(f"{out}: was made with other options ({', '.join(diff)}); "
                             "use the same options or another --out")
    if not folder.is_finished():
        folder.work.mkdir(parents=True, exist_ok=True)
        write_json_atomic(folder.settings_file, settings.to_json())


def _video_record(out: Path, src: Source, info: VideoInfo, settings: ShardSettings) -> dict:
    st = src.path.stat()
    units = plan_units(src.name, info.start_s, info.duration_s, settings.segment_s)
    return {"name": src.name, "source": str(src.path.resolve()), "source_bytes": st.st_size,
            "source_mtime_ns": st.st_mtime_ns, "info": info.to_json(), "n_units": len(units),
            "stored_size": list(stored_size(info.width, info.height, settings.short_side)),
            "settings_fps": settings.fps}


def prepare(out: Path, sources: list[Source], settings: ShardSettings, on_error: ErrorPolicy,
            skipped: list[str], on_warning: Callable[[str], None] = lambda message: None
            ) -> dict[str, tuple[VideoInfo, dict]]:
    """Probe each source and record it under DIR/.work/<name>/video.json. Returns name -> (info, record);
    names already in the folder go to `skipped`, a source that cannot be used to `on_error`, and a
    source slower than --fps (its frames would be stored repeatedly) to `on_warning`."""
    done = {}
    meta = ShardFolder(out).read_index()
    if meta is not None:
        done = {v["name"]: v for v in meta["videos"]}
    ready = {}
    for src in sources:
        try:
            if src.name in done:
                old, st = done[src.name], src.path.stat()
                if (old["source_bytes"], old["source_mtime_ns"]) == (st.st_size, st.st_mtime_ns):
                    skipped.append(src.name)
                    continue
                raise InputError(f"{src.path}: {out} already holds a video named {src.name!r} made from "
                                 f"{old['source']}; rename the file or use another --out")
            info = probe(str(src.path))
            slow = fps_warning(str(src.path), info.fps, settings.fps)
            if slow:
                on_warning(slow)
            record = _video_record(out, src, info, settings)
            meta_path = ShardFolder(out).video_record(src.name)
            if meta_path.exists():
                old = json.loads(meta_path.read_text())
                if (old["source_bytes"], old["source_mtime_ns"]) != (record["source_bytes"], record["source_mtime_ns"]):
                    raise InputError(f"{src.path}: {meta_path.parent} holds unfinished work from a different file "
                                     f"({old['source']}); delete that folder or use another --out")
            meta_path.parent.mkdir(parents=True, exist_ok=True)
            write_json_atomic(meta_path, record)
            ready[src.name] = (info, record)
        except InputError as e:
            on_error(src.name, e)
    return ready


def _run_unit(out: str, unit: Unit, info: dict, settings: dict, threads: int, remote: str | None, progress) -> None:
    started = time.monotonic()
    if unit.index == 0:  # the source's checksum, kept with the work before the unit's marker: `index` then
        record = json.loads(ShardFolder(out).video_record(unit.video).read_text())  # needs no access to sources
        sha256_of(Path(record["source"]), ShardFolder(out).video_work(unit.video))
    writer = UnitWriter(Path(out), unit)
    try:
        process_unit(unit, VideoInfo(**info), ShardSettings.from_json(settings), writer,
                     progress=lambda n: progress((unit.video, n)) if n else None, threads=threads)
    except BaseException:
        writer.abort()
        raise
    if remote is not None:
        MirroredFolder(remote, Path(out)).push_unit(unit.video, unit.index)
    progress((unit, time.monotonic() - started))  # finished: run_units hands it to on_unit


class _Bars:
    """A total bar and one bar per video, in source frames, fed from worker messages."""

    def __init__(self, videos: dict[str, tuple[VideoInfo, dict]], todo: list[Unit], quiet: bool):
        frames = {n: max(1, round(i.duration_s * i.fps)) for n, (i, _) in videos.items()}
        share = {n: {u.index for u in todo if u.video == n} for n in videos}
        self.total = tqdm(total=sum(round(frames[n] * len(share[n]) / r["n_units"]) for n, (_, r) in videos.items()),
                          desc="all videos", unit="frame", disable=quiet, dynamic_ncols=True, position=0)
        self.per = {n: tqdm(total=round(frames[n] * len(share[n]) / r["n_units"]), desc=n[:24], unit="frame",
                            disable=quiet, dynamic_ncols=True, position=i + 1, leave=False)
                    for i, (n, (_, r)) in enumerate(videos.items()) if share[n]}

    def update(self, video: str, n: int) -> None:
        self.total.update(n)
        if video in self.per:
            self.per[video].update(n)

    def close(self) -> None:
        for b in self.per.values():
            b.close()
        self.total.close()


def run_units(out: Path, videos: dict[str, tuple[VideoInfo, dict]], todo: list[Unit], settings: ShardSettings,
              workers: int, on_error: ErrorPolicy, quiet: bool, remote: str | None = None,
              on_unit: Callable[[Unit, float], None] = lambda unit, seconds: None) -> int:
    """Process `todo` on `workers` processes (inline when 1), with progress bars; returns the units done.
    A failed video's work folder is removed: nothing half-made stays behind."""
    bars = _Bars(videos, todo, quiet)
    threads = max(1, usable_cores() // max(1, min(workers, len(todo))))  # decoder threads per unit
    tasks = [Task(u.video, _run_unit, (str(out), u, videos[u.video][0].to_json(), settings.to_json(), threads, remote))
             for u in todo]
    failed: set[str] = set()

    def policy(video: str, error: InputError) -> None:
        if isinstance(error, StorageError):  # the store, not the video: stop, keep the work made here
            raise error
        failed.add(video)  # before on_error may stop the run: its work folder goes in any case
        on_error(video, error)

    try:
        return len(run_tasks(tasks, workers, policy, on_progress=lambda m: on_unit(*m) if isinstance(m[0], Unit)
                             else bars.update(*m)).results)
    finally:
        bars.close()
        for video in failed:
            shutil.rmtree(ShardFolder(out).video_work(video), ignore_errors=True)


def run_shard(inputs: list[str], out: Path, settings: ShardSettings, workers: int, part: tuple[int, int] | None,
              on_error: ErrorPolicy = reraise, quiet: bool = False,
              on_warning: Callable[[str], None] = lambda message: None, url: str | None = None,
              on_start: Callable[[int, int, int], None] = lambda mine, total, done: None,
              on_unit: Callable[[Unit, float], None] = lambda unit, seconds: None) -> ShardReport:
    """The whole `shard` command; a bad input goes to `on_error` (default: stop with its InputError), a
    usable but doubtful one (a source slower than --fps) to `on_warning` before any work starts. With `url`,
    `out` is the local work folder and every finished unit, then the finished folder, goes to `url`.
    `on_start(mine, total, done)` is called once the units are known, `on_unit(unit, seconds)` per unit made."""
    report = ShardReport()
    sources = resolve_inputs(inputs)
    check_writable(out, "--work-dir" if url else "--out")
    with FolderLock(out, "dora-data shard", part):  # parts share the folder; anything else is refused
        mirror = MirroredFolder(url, out).open() if url else None
        check_settings(out, settings)
        if part is None or part[1] == 1:  # unfinished videos of another run would stop assembly: say so now
            _, waiting = pending_videos(out, ShardFolder(out).indexed_names() | {src.name for src in sources})
            if waiting:
                refuse_incomplete(out, waiting)
        videos = prepare(out, sources, settings, on_error, report.skipped, on_warning)
        units = [u for name, (info, rec) in videos.items()
                 for u in plan_units(name, info.start_s, info.duration_s, settings.segment_s)]
        mine = select_part(units, part) if part else units
        if mirror is not None:
            mirror.push_start()
            todo = [u for u in mine if not mirror.unit_done(u.video, u.index)]
            for u in [u for u in todo if is_complete(out, u)]:  # made here, killed before its upload
                mirror.push_unit(u.video, u.index)
        todo = [u for u in mine if not (mirror.unit_done(u.video, u.index) if mirror else is_complete(out, u))]
        report.units_total = len(mine)
        report.units_done = len(mine) - len(todo)
        on_start(len(mine), len(units), report.units_done)  # this run's units, all units, those already done
        report.units_done += run_units(out, videos, todo, settings, workers, on_error, quiet, url, on_unit)
        report.failed = failures(on_error)
        for video in report.failed if mirror is not None else ():  # --keep-going: its uploaded units go too
            mirror.remote.remove(f".work/{video}")
        if part is None or part[1] == 1:
            if mirror is not None:
                mirror.pull_work(quiet)
            report.index = assemble(out, settings, quiet=quiet)
            if mirror is not None:
                mirror.publish(quiet)
        if mirror is not None:
            mirror.push_logs()
    return report


def run_index(out: Path, url: str | None = None, quiet: bool = False, drop_incomplete: bool = False,
              on_dropped: Callable[[WorkVideo], None] = lambda video: None) -> dict:
    """The whole `index` command: assemble the complete units of `out` (with `url`: of the remote folder, in
    the local folder `out`, then publish it there); returns dataset.json."""
    folder = ShardFolder(out)
    where = url or out
    if url:
        check_writable(out, "--work-dir")
    with FolderLock(out, "dora-data index"):
        mirror = MirroredFolder(url, out).open() if url else None
        if mirror is not None:
            mirror.pull_work(quiet)
        saved = folder.saved_settings()
        if saved is None:
            raise InputError(f"{where}: no work units and no dataset.json; run `dora-data shard --out {where}` first")
        dropped = drop_unfinished(out) if drop_incomplete else []
        for v in dropped:
            on_dropped(v)
        index = assemble(out, ShardSettings.from_json(saved), quiet=quiet, dropped=dropped)
        if mirror is not None and index["videos"]:
            mirror.publish(quiet)
    if not index["videos"]:
        raise InputError(f"{where}: nothing to index; {folder.next_step()}")
    return index
