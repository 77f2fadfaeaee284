"""`dora-data shard`: probe inputs, run their work units in parallel, then assemble the shards."""

from __future__ import annotations

import contextlib
import json
import multiprocessing as mp
import os
import queue
import shutil
import threading
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from pipeline.errors import InputError
from pipeline.files import FolderLock, check_writable, write_json_atomic
from pipeline.shard.assemble import assemble
from pipeline.shard.segment import process_unit
from pipeline.shard.settings import ShardSettings
from pipeline.shard.units import Unit, UnitWriter, is_complete, plan_units, select_part, work_dir
from pipeline.video import Source, VideoInfo, probe, resolve_inputs, stored_size


@dataclass
class ShardReport:
    manifest: dict | None = None
    skipped: list[str] = field(default_factory=list)  # already in the folder
    failed: dict[str, str] = field(default_factory=dict)  # video name -> one-line error
    units_done: int = 0
    units_total: int = 0


def check_settings(out: Path, settings: ShardSettings) -> None:
    """A folder holds one set of shard options: refuse a rerun with different ones."""
    manifest = out / "dataset.json"
    saved = out / ".work" / "settings.json"
    for path in (manifest, saved):
        if path.exists():
            data = json.loads(path.read_text())
            old = ShardSettings.from_json(data["settings"] if path == manifest else data)
            diff = old.differences(settings)
            if diff:
                raise InputError(f"{out}: was made with other options ({', '.join(diff)}); "
                                 "use the same options or another --out")
    if not manifest.exists():
        saved.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(saved, settings.to_json())


def _video_record(out: Path, src: Source, info: VideoInfo, settings: ShardSettings) -> dict:
    st = src.path.stat()
    units = plan_units(src.name, info.start_s, info.duration_s, settings.segment_s)
    return {"name": src.name, "source": str(src.path.resolve()), "source_bytes": st.st_size,
            "source_mtime_ns": st.st_mtime_ns, "info": info.to_json(), "n_units": len(units),
            "stored_size": list(stored_size(info.width, info.height, settings.short_side)),
            "settings_fps": settings.fps}


def prepare(out: Path, sources: list[Source], settings: ShardSettings, keep_going: bool,
            report: ShardReport) -> dict[str, tuple[VideoInfo, dict]]:
    """Probe each source and record it under DIR/.work/<name>/video.json. Returns name -> (info, record)."""
    done = {}
    manifest = out / "dataset.json"
    if manifest.exists():
        done = {v["name"]: v for v in json.loads(manifest.read_text())["videos"]}
    ready = {}
    for src in sources:
        try:
            if src.name in done:
                old, st = done[src.name], src.path.stat()
                if (old["source_bytes"], old["source_mtime_ns"]) == (st.st_size, st.st_mtime_ns):
                    report.skipped.append(src.name)
                    continue
                raise InputError(f"{src.path}: {out} already holds a video named {src.name!r} made from "
                                 f"{old['source']}; rename the file or use another --out")
            info = probe(str(src.path))
            record = _video_record(out, src, info, settings)
            meta_path = work_dir(out, src.name) / "video.json"
            if meta_path.exists():
                old = json.loads(meta_path.read_text())
                if (old["source_bytes"], old["source_mtime_ns"]) != (record["source_bytes"], record["source_mtime_ns"]):
                    raise InputError(f"{src.path}: {meta_path.parent} holds unfinished work from a different file "
                                     f"({old['source']}); delete that folder or use another --out")
            meta_path.parent.mkdir(parents=True, exist_ok=True)
            write_json_atomic(meta_path, record)
            ready[src.name] = (info, record)
        except InputError as e:
            if not keep_going:
                raise
            report.failed[src.name] = str(e)
    return ready


def _die_with_parent() -> None:
    """Worker initialiser: a worker must not outlive a killed `shard` (Linux PR_SET_PDEATHSIG)."""
    try:
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)
    except OSError:
        pass


def _run_unit(out: str, unit: Unit, info: dict, settings: dict, threads: int, progress_q) -> None:
    writer = UnitWriter(Path(out), unit)
    try:
        process_unit(unit, VideoInfo(**info), ShardSettings.from_json(settings), writer,
                     progress=lambda n: progress_q.put((unit.video, n)) if n else None, threads=threads)
    except BaseException:
        writer.abort()
        raise


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
              workers: int, keep_going: bool, report: ShardReport, quiet: bool) -> None:
    """Process `todo` on `workers` processes (inline when 1), with progress bars."""
    bars = _Bars(videos, todo, quiet)
    threads = max(1, (os.cpu_count() or 1) // max(1, min(workers, len(todo))))  # decoder threads per unit
    failed = report.failed

    def fail(video: str, msg: str) -> None:
        failed[video] = msg
        if not keep_going:
            raise InputError(msg)

    try:
        if workers <= 1 or len(todo) <= 1:  # no pool to start for a single unit
            q: queue.SimpleQueue = queue.SimpleQueue()
            for unit in todo:
                if unit.video in failed:
                    continue
                try:
                    _run_unit(str(out), unit, videos[unit.video][0].to_json(), settings.to_json(), threads, q)
                    report.units_done += 1
                except InputError as e:
                    fail(unit.video, str(e))
                while not q.empty():
                    bars.update(*q.get())
            return
        ctx = mp.get_context("spawn")
        with ctx.Manager() as manager:
            progress_q = manager.Queue()
            stop = threading.Event()

            def pump() -> None:
                while not stop.is_set():
                    with contextlib.suppress(queue.Empty):
                        bars.update(*progress_q.get(timeout=0.2))

            pumper = threading.Thread(target=pump, daemon=True)
            pumper.start()
            pool = ProcessPoolExecutor(workers, mp_context=ctx, initializer=_die_with_parent)
            try:
                running = {pool.submit(_run_unit, str(out), u, videos[u.video][0].to_json(), settings.to_json(),
                                       threads, progress_q): u for u in todo}
                while running:
                    finished, _ = wait(running, return_when=FIRST_COMPLETED)
                    for fut in finished:
                        unit = running.pop(fut)
                        err = fut.exception()
                        if err is None:
                            report.units_done += 1
                        elif isinstance(err, InputError):
                            for other, u in list(running.items()):
                                if u.video == unit.video and other.cancel():
                                    running.pop(other)
                            if unit.video not in failed:
                                fail(unit.video, str(err))
                        else:
                            raise err
            finally:
                for fut in running:
                    fut.cancel()
                pool.shutdown(wait=True, cancel_futures=True)
                stop.set()
                pumper.join()
    finally:
        bars.close()
        for video in failed:  # a bad video leaves nothing half-made behind (after its last unit stopped)
            shutil.rmtree(work_dir(out, video), ignore_errors=True)


def run_shard(inputs: list[str], out: Path, settings: ShardSettings, workers: int, part: tuple[int, int] | None,
              keep_going: bool, quiet: bool = False) -> ShardReport:
    """The whole `shard` command; raises InputError for the first bad input unless keep_going."""
    report = ShardReport()
    sources = resolve_inputs(inputs)
    check_writable(out)
    with FolderLock(out, "dora-data shard", part):  # parts share the folder; anything else is refused
        check_settings(out, settings)
        videos = prepare(out, sources, settings, keep_going, report)
        units = [u for name, (info, rec) in videos.items()
                 for u in plan_units(name, info.start_s, info.duration_s, settings.segment_s)]
        mine = select_part(units, part) if part else units
        todo = [u for u in mine if not is_complete(out, u)]
        report.units_total = len(mine)
        report.units_done = len(mine) - len(todo)
        run_units(out, videos, todo, settings, workers, keep_going, report, quiet)
        if part is None or part[1] == 1:
            report.manifest = assemble(out, settings, quiet=quiet)
    return report
