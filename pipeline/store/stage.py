"""A verified local copy (the "stage") of a finished shard folder on object storage, for the readers.

Training and the read commands keep reading local files with one pread per frame; `stage(url)` makes
and keeps that copy under cache_dir/<scheme>/<bucket>/<prefix>. On one node one process downloads
while the others (torchrun's other local ranks) wait on an flock beside the copy. Every file is
checked against dataset.json's `files` (size and SHA-256); a file already verified is trusted while
its size and mtime are unchanged (`.staged.json`), so a restart re-hashes only what changed.
Downloads go through `.part` files continued after a kill, and dataset.json is written last and
atomically: the copy is complete exactly when its dataset.json equals the remote one.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import hashlib
import json
import os
import re
import shutil
import socket
import sys
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

import click
from tqdm import tqdm

from pipeline.errors import InputError
from pipeline.files import atomic_open, cache_root, write_json_atomic
from pipeline.format import expected_files, file_entry
from pipeline.store.params import PathOrURL
from pipeline.store.remote import RemoteFolder, is_url, redact

INDEX, STATE = "dataset.json", ".staged.json"
DOWNLOADS = 4  # files fetched at once: one stream rarely fills a fast link
_UNSAFE = re.compile(r"[^A-Za-z0-9._=+-]")
Say = Callable[[str], None]


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def default_cache_dir() -> Path:
    """$DORA_CACHE/shards, else ${XDG_CACHE_HOME:-~/.cache}/dora-wt/shards."""
    return cache_root() / "shards"


def cache_path(url: str, cache_dir: str | Path | None = None) -> Path:
    """Where the copy of `url` lives: cache_dir/<scheme>/<bucket>/<prefix>, each part made path-safe (a
    short hash of the URL is added when that changed a name, so two URLs never share a copy)."""
    clean = redact(str(url)).rstrip("/")
    scheme, rest = clean.split("://", 1)
    parts = [p for p in rest.split("/") if p]
    if not parts:
        raise InputError(f"{clean}: no bucket in the URL; give s3://BUCKET/PREFIX")
    safe = ["_" * len(p) if p in (".", "..") else _UNSAFE.sub("_", p) for p in parts]
    if safe != parts:
        safe[-1] += "-" + hashlib.sha1(clean.encode()).hexdigest()[:8]
    return Path(cache_dir or default_cache_dir()) / _UNSAFE.sub("_", scheme.lower()) / Path(*safe)


@contextlib.contextmanager
def node_lock(path: Path, name: str, say: Say = _say) -> Iterator[None]:
    """Hold an exclusive flock on `path` (released by the kernel however the holder ends); while another
    process holds it, say once whom we wait for, then wait."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 256, 0).decode(errors="replace").strip() or "another process"
            say(f"waiting for {holder} to finish staging {name}")
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError as e:
            if e.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                raise
            say(f"warning: {path.parent} has no file locks: processes staging {name} at once may each download it")
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} ({socket.gethostname()})".encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)  # a later waiter never names a finished holder
    finally:
        os.close(fd)


def _check_rel(name: str, rel: str) -> None:
    """A manifest path must stay inside the folder."""
    p = Path(rel)
    if p.is_absolute() or ".." in p.parts or not p.parts or rel == INDEX:
        raise InputError(f"{name}/{INDEX}: lists the file {rel!r}, which is not a path inside the folder")


def _damage(path: Path, want: dict, known: dict | None) -> tuple[str | None, dict | None]:
    """(why `path` is not the file `want` describes, or None; its `.staged.json` record when verified).
    A record whose size and mtime still match stands for the file's hash."""
    st = path.stat()
    if want.get("bytes") is not None and st.st_size != want["bytes"]:
        return "size differed", None
    if not want.get("sha256"):
        return None, None
    record = {"bytes": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": want["sha256"]}
    if known == record:
        return None, record
    if file_entry(path)["sha256"] != want["sha256"]:
        return "sha256 differed", None
    return None, record


def _load_state(local: Path) -> dict:
    try:
        state = json.loads((local / STATE).read_text())
        return state if isinstance(state, dict) else {}
    except (OSError, ValueError):
        return {}


def _extras(local: Path, expected: dict) -> list[Path]:
    """Files of the folder's own (shards/, frames/) that the manifest no longer lists (a `.part` of a listed
    file is kept); other paths, such as the copy of a URL nested under this one, are not ours to delete."""
    keep = {INDEX, STATE, *expected, *(f"{rel}.part" for rel in expected)}
    return [p for d in ("shards", "frames") for p in sorted((local / d).glob("*"))
            if p.is_file() and p.relative_to(local).as_posix() not in keep]


class _Fetcher:
    """Downloads of listed files into the copy, each verified against the manifest."""

    def __init__(self, remote: RemoteFolder, local: Path, expected: dict, bar: tqdm):
        self.remote, self.local, self.expected, self.bar = remote, local, expected, bar
        self.lock, self.fetched, self.stop = threading.Lock(), 0, threading.Event()

    def count(self, n: int) -> None:
        if self.stop.is_set():  # Ctrl-C or a failed file: running downloads stop at their next chunk
            raise InterruptedError("staging stopped")
        with self.lock:
            self.fetched += n
            self.bar.update(n)

    def __call__(self, rel: str, fresh: bool) -> dict | None:
        """Download `rel` (from scratch when `fresh`, else continuing its `.part`); its verified record."""
        path, want = self.local / rel, self.expected[rel]
        part = path.with_name(path.name + ".part")
        if fresh or (part.exists() and want.get("bytes") is not None and part.stat().st_size > want["bytes"]):
            part.unlink(missing_ok=True)
        for attempt in range(2):
            resumed = part.exists() and attempt == 0
            path.unlink(missing_ok=True)
            self.remote.download(rel, path, on_bytes=self.count, resume=resumed)
            reason, record = _damage(path, want, None)
            if reason is None:
                return record
            if not resumed:
                break  # a fresh download that still differs: the object is not the one listed
        got = file_entry(path)
        path.unlink(missing_ok=True)
        said = f"{want['bytes']} bytes" + (f", sha256 {want['sha256'][:16]}..." if want.get("sha256") else "")
        raise InputError(f"{redact(self.remote.url)}/{rel}: downloaded {got['bytes']} bytes with sha256 "
                         f"{got['sha256'][:16]}..., but {INDEX} says {said}: the object was changed or damaged on "
                         "the store; run the command again, and if it stays, upload the folder again")


def stage(url: str, cache_dir: str | Path | None = None, quiet: bool = False, say: Say = _say) -> Path:
    """The local path of a verified copy of the finished shard folder at `url`, made or repaired now."""
    remote = RemoteFolder(str(url))
    name = redact(remote.url)
    remote.check(write=False)
    local = cache_path(remote.url, cache_dir)
    try:
        local.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"{local}: cannot make the shard cache here ({e.strerror}); give another folder with "
                         "--cache-dir or $DORA_CACHE") from None
    with node_lock(local.with_name(local.name + ".lock"), name, say):
        raw = remote.read(INDEX)  # under the lock: the ranks of a node all get the copy of one dataset.json
        if raw is None:
            raise InputError(f"{name}: no {INDEX}, not a finished shard folder; run `dora-data index {name}` after "
                             "every part finished")
        try:
            index = json.loads(raw)
            expected = expected_files(index)
        except (ValueError, KeyError, TypeError) as e:
            raise InputError(f"{name}/{INDEX}: not a shard folder's {INDEX} ({e})") from None
        return _sync(remote, index, raw, expected, local, quiet, say)


def _sync(remote: RemoteFolder, index: dict, raw: bytes, expected: dict, local: Path, quiet: bool,
          say: Say) -> Path:
    """Make `local` equal the remote folder (the caller holds the node lock)."""
    name = redact(remote.url)
    for rel in expected:
        _check_rel(name, rel)
    if not index.get("files"):
        say(f"warning: {name} predates checksums in {INDEX}: its copy is checked by file size only; run "
            f"`dora-data index` on the folder again to record them")
        sizes = remote.listing()
        expected = {rel: {"bytes": e.get("bytes", sizes.get(rel))} for rel, e in expected.items()}
    top, state = local / INDEX, _load_state(local)
    current = top.exists() and top.read_bytes() == raw
    extras = _extras(local, expected)
    verified, todo = {}, {}  # rel -> record; rel -> why it is replaced (None: missing)
    have = [rel for rel in sorted(expected) if (local / rel).is_file()]
    unsure = sum(expected[r].get("bytes") or 0 for r in have if state.get(r) is None)
    with tqdm(total=unsure, unit="B", unit_scale=True, unit_divisor=1024, desc="checking", file=sys.stderr,
              disable=quiet or unsure == 0, leave=False) as bar:
        for rel in have:
            reason, record = _damage(local / rel, expected[rel], state.get(rel))
            if reason:
                todo[rel] = reason
            elif record:
                verified[rel] = record
            if state.get(rel) is None:
                bar.update(expected[rel].get("bytes") or 0)
    todo.update({rel: None for rel in sorted(expected) if rel not in have})
    if not current or todo or extras:
        top.unlink(missing_ok=True)  # from here until the end the copy is incomplete, and says so
    for p in extras:
        p.unlink()
    for d in sorted((p for p in local.rglob("*") if p.is_dir()), reverse=True):
        with contextlib.suppress(OSError):
            d.rmdir()  # only empty ones go
    state = {rel: r for rel, r in {**state, **verified}.items() if rel in expected and rel not in todo}
    write_json_atomic(local / STATE, state)
    _check_space(local, expected, todo)
    fetched = _download(remote, local, expected, todo, state, quiet, say)
    if not current or not top.exists():
        with atomic_open(top, "wb") as f:
            f.write(raw)  # last: the copy is complete
    kept = len(expected) - len(todo)
    say(f"{name}: staged in {local}: {len(todo)} file(s) downloaded ({fetched / 1e6:.1f} MB), {kept} already "
        f"there and verified" + (f", {len(extras)} no longer listed removed" if extras else ""))
    return local


def _remaining(local: Path, expected: dict, todo: dict) -> int:
    """Bytes still to fetch for `todo`: a missing file's `.part` is continued, a damaged file fetched whole."""
    need = 0
    for rel, reason in todo.items():
        part = (local / rel).with_name(Path(rel).name + ".part")
        size = expected[rel].get("bytes") or 0
        done = part.stat().st_size if reason is None and part.exists() else 0
        need += size - done if done <= size else size
    return need


def _check_space(local: Path, expected: dict, todo: dict) -> None:
    """Refuse before downloading what the disk cannot hold."""
    need = _remaining(local, expected, todo)
    free = shutil.disk_usage(local).free + sum((local / rel).stat().st_size for rel, r in todo.items() if r)
    if need > free:
        raise InputError(f"{local}: staging needs {need / 1e9:.2f} GB more and {free / 1e9:.2f} GB are free; free "
                         "space, or give a cache folder on a bigger disk (--cache-dir or $DORA_CACHE)")


def _download(remote: RemoteFolder, local: Path, expected: dict, todo: dict, state: dict, quiet: bool,
              say: Say) -> int:
    """Fetch every file of `todo` (a few at once), recording each verified one; the bytes fetched."""
    total = _remaining(local, expected, todo)
    with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=f"staging {redact(remote.url)}",
              file=sys.stderr, disable=quiet or not todo, dynamic_ncols=True) as bar:
        fetch = _Fetcher(remote, local, expected, bar)
        pool = ThreadPoolExecutor(max_workers=max(1, min(DOWNLOADS, len(todo))))
        try:
            jobs = {pool.submit(fetch, rel, reason is not None): rel for rel, reason in todo.items()}
            for job in as_completed(jobs):
                rel = jobs[job]
                record = job.result()
                if record:
                    state[rel] = record
                    write_json_atomic(local / STATE, state)
                if todo[rel]:
                    say(f"repaired {rel} ({todo[rel]})")
        except BaseException:
            fetch.stop.set()
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
    return fetch.fetched


def stages_shards(param: str, option: str = "--cache-dir"):
    """Decorator (put it right under the `@group.command()` line): the command's argument or option
    `param` may be a URL of a finished shard folder; it is staged (`stage`) and replaced by the local copy's
    path before the command runs. Adds `option` for the cache folder."""
    dest = option.lstrip("-").replace("-", "_")

    def decorate(f):
        found = [p for p in getattr(f, "__click_params__", []) if p.name == param]
        if not found:
            raise ValueError(f"{f.__name__} has no parameter {param!r} (put @stages_shards above its options)")
        found[0].type = PathOrURL()  # click.Path would fold s3:// into s3:/

        @functools.wraps(f)
        def run(*args, **kw):
            cache, quiet = kw.pop(dest), bool(kw.get("quiet"))
            value = kw[param]
            if isinstance(value, tuple):
                kw[param] = tuple(stage(v, cache, quiet) if is_url(v) else v for v in value)
            elif value is not None and is_url(value):
                kw[param] = stage(value, cache, quiet)
            return f(*args, **kw)

        return click.option(option, dest, type=click.Path(path_type=Path), default=None,
                            help="Where shard folders given as URLs (s3://, gs://) are copied and verified "
                                 "[default: $DORA_CACHE/shards or ~/.cache/dora-wt/shards].")(run)

    return decorate
