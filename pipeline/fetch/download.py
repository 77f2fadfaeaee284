"""`dora-data fetch`: download the videos of a catalog with yt-dlp's embedded API, verified, resumable.

Layout: OUT/<name>/<id>.<ext>, <id>.info.json (yt-dlp's), <id>.<ext>.sha256, and OUT/archive.jsonl
(one record per finished video). A video counts as done only when its file hashes to its .sha256:
a rerun re-hashes and skips it. yt-dlp writes `.part` files and renames them when complete, and
resumes them with HTTP ranges, so a kill at any moment followed by a rerun ends with the same files.
"""

from __future__ import annotations

import contextlib
import errno
import importlib.util
import json
import os
import re
import shutil
import socket
import sysconfig
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from tqdm import tqdm

from pipeline.errors import InputError
from pipeline.fetch.catalog import Entry
from pipeline.files import write_text_atomic
from pipeline.video import VIDEO_EXTS, probe, sha256_file

# video only; VP9 first (A100/H100 NVDEC cannot decode AV1), then anything but AV1, then anything
FORMAT = ("bv*[height<={h}][vcodec^=vp09]/bv*[height<={h}][vcodec!^=av01]/bv*[height<={h}]"
          "/b[height<={h}][vcodec!^=av01]/b[height<={h}]/b")
CC_BY = re.compile(r"creative\s*commons\s*attribution|\bcc[\s-]*by\b", re.I)
NOT_BY = re.compile(r"non[\s-]*commercial|no[\s-]*deriv|\bnc\b|\bnd\b|share[\s-]*alike|\bsa\b", re.I)
DISK_FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


@dataclass
class FetchOptions:
    out: Path
    max_height: int = 2160
    allow_license: bool = False
    rate_limit: int | None = None  # bytes/s
    retries: int = 3
    retry_wait: float = 2.0  # seconds before the first retry; doubles each time
    builtin: bool = True  # the catalog is data/walking_tours.csv (a missing licence field only warns)
    quiet: bool = False


@dataclass
class Outcome:
    name: str
    status: str  # downloaded | verified | refused | failed
    path: Path | None = None
    message: str = ""


def license_verdict(reported: str | None, entry: Entry, builtin: bool, allow: bool) -> tuple[bool, str]:
    """(accepted, note) for the licence yt-dlp reports. CC-BY passes; anything else is refused unless
    --allow-license. No licence field: a warning for the built-in catalog, a refusal otherwise."""
    if reported:
        ok = bool(CC_BY.search(reported)) and not NOT_BY.search(reported)
        if ok:
            return True, f"licence: {reported}"
        if allow:
            return True, f"licence {reported!r} accepted by --allow-license"
        return False, (f"{entry.name}: the video's licence is {reported!r}, not Creative Commons Attribution "
                       f"(the catalog says {entry.license or 'nothing'}); pass --allow-license if you may use it")
    if builtin or allow:
        return True, (f"warning: {entry.name}: no licence reported by the site (the catalog declares "
                      f"{entry.license or 'nothing'}); recorded as unverified")
    return False, (f"{entry.name}: the site reports no licence for {entry.url}; check it yourself and pass "
                   "--allow-license to download it")


def finished_file(folder: Path, entry: Entry) -> Path | None:
    """The downloaded video of `entry` (final name, not a .part), if any."""
    if not folder.exists():
        return None
    found = [p for p in folder.iterdir() if p.name.startswith(entry.id + ".") and p.suffix.lower() in VIDEO_EXTS]
    return found[0] if found else None


def partial_bytes(folder: Path, entry: Entry) -> int:
    return sum(p.stat().st_size for p in folder.glob(f"{entry.id}.*.part")) if folder.exists() else 0


def verify_existing(folder: Path, entry: Entry, opts: FetchOptions) -> Path | None:
    """A finished file whose sha256 matches its .sha256 (written now if the run was killed before it).

    A file that does not match its checksum is deleted, so that it is downloaded again.
    """
    path = finished_file(folder, entry)
    if path is None:
        return None
    sidecar = path.with_name(path.name + ".sha256")
    with tqdm(total=path.stat().st_size, unit="B", unit_scale=True, desc=f"{entry.name} sha256",
              disable=opts.quiet, leave=False) as bar:
        digest = sha256_file(path, bar.update)
    if sidecar.exists():
        if sidecar.read_text().split()[0] == digest:
            return path
        path.unlink()
        sidecar.unlink()
        return None
    try:
        probe(str(path))  # killed between yt-dlp's rename and our checksum: finish the bookkeeping
    except InputError:
        path.unlink()
        return None
    write_text_atomic(sidecar, f"{digest}  {path.name}\n")
    return path


class _Bar:
    """yt-dlp progress hook -> a tqdm bar in bytes (speed and ETA from tqdm)."""

    def __init__(self, name: str, quiet: bool):
        self.name, self.quiet, self.bar = name, quiet, None

    def __call__(self, d: dict) -> None:
        if d.get("status") not in ("downloading", "finished"):
            return
        total = d.get("total_bytes") or d.get("total_bytes_estimate")
        if self.bar is None:
            self.bar = tqdm(total=total, unit="B", unit_scale=True, desc=self.name, disable=self.quiet,
                            dynamic_ncols=True)
        if total and self.bar.total != total:
            self.bar.total = total
        done = d.get("downloaded_bytes") or 0
        self.bar.update(max(0, done - self.bar.n))

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class _Log:
    """yt-dlp logger: keep its last error line for our one-line message; stay quiet otherwise."""

    def __init__(self):
        self.last_error = ""

    def debug(self, msg: str) -> None:
        pass

    def info(self, msg: str) -> None:
        pass

    def warning(self, msg: str) -> None:
        pass

    def error(self, msg: str) -> None:
        text = msg.replace("ERROR: ", "").strip()
        if text:  # yt-dlp also sends bare newlines here
            self.last_error = text.splitlines()[0]


def _download(entry: Entry, folder: Path, opts: FetchOptions) -> tuple[Path, str]:
    import yt_dlp

    log, bar = _Log(), _Bar(entry.name, opts.quiet)
    params = {
        "outtmpl": str(folder / (entry.id.replace("%", "%%") + ".%(ext)s")),
        "format": FORMAT.format(h=opts.max_height), "writeinfojson": True, "continuedl": True, "nopart": False,
        "overwrites": False, "retries": opts.retries, "fragment_retries": opts.retries, "quiet": True,
        "no_warnings": True, "noprogress": True, "progress_hooks": [bar], "logger": log, "noplaylist": True,
        "ratelimit": opts.rate_limit, "restrictfilenames": True, "windowsfilenames": True,
    }
    try:
        with yt_dlp.YoutubeDL(params) as ydl:
            info = ydl.extract_info(entry.url, download=False)
            ok, note = license_verdict(info.get("license"), entry, opts.builtin, opts.allow_license)
            if not ok:
                raise _Refused(note)
            result = ydl.process_ie_result(info, download=True)
    except yt_dlp.utils.YoutubeDLError as e:  # DownloadError, UnavailableVideoError (e.g. disk full), ...
        raise _Failed(log.last_error or str(e).replace("ERROR: ", "").splitlines()[0]) from None
    finally:
        bar.close()
    downloads = result.get("requested_downloads") or [{}]
    path = Path(downloads[0].get("filepath") or result.get("filepath") or "")
    if not path.is_file():
        raise _Failed("yt-dlp reported success but wrote no file")
    return path, note


YOUTUBE = re.compile(r"^https?://([a-z0-9-]+\.)*(youtube\.com|youtu\.be|youtube-nocookie\.com)(/|$)", re.I)
FIX_RUNTIME = 'pip install "yt-dlp[default,deno]"'


def js_runtime_problem(scripts: str | None = None, path: str | None = None) -> str | None:
    """What is missing for YouTube (yt-dlp-ejs, or the deno runtime where yt-dlp looks for it: the Python
    environment's scripts folder, then PATH), or None when both are there."""
    if importlib.util.find_spec("yt_dlp_ejs") is None:
        return "the yt-dlp-ejs package is not installed"
    scripts = sysconfig.get_path("scripts") if scripts is None else scripts
    exe = Path(scripts) / "deno"
    if not (exe.is_file() and os.access(exe, os.X_OK)) and shutil.which("deno", path=path) is None:
        return "no deno JavaScript runtime was found"
    return None


def check_youtube_runtime(entry: Entry) -> None:
    """Before downloading a YouTube URL: stop with one line and the fix when the JS runtime is missing."""
    if YOUTUBE.match(entry.url):
        problem = js_runtime_problem()
        if problem:
            raise InputError(f"{entry.name}: YouTube needs yt-dlp's JavaScript runtime, but {problem}; "
                             f"install it with: {FIX_RUNTIME}")


class _Refused(Exception):
    pass


class _Failed(Exception):
    pass


class NoNetwork(InputError):
    """Not one host of the catalog resolves (or the first connection finds no route): said once, exit 2."""


def short_error(text: str, most: int = 200) -> str:
    """yt-dlp's error without its repeated '(caused by ...)' tail, at most `most` characters."""
    text = text.split(" (caused by ", 1)[0].strip()
    return text if len(text) <= most else text[:most - 3].rstrip() + "..."


class Network:
    """Name resolution of the catalog's hosts, each looked up once, before anything is downloaded.

    When not one host resolves (no network), the run stops at the first video that needs a download,
    with one line (`NoNetwork`), instead of retrying every video. A single host that does not
    resolve fails its videos at once, without retries and without a folder. Behind a proxy (the
    *_proxy variables) local name resolution says nothing, so nothing is checked.
    """

    def __init__(self, entries: list[Entry]):
        self.hosts = list(dict.fromkeys(urlparse(e.url).hostname or "" for e in entries))
        self.errors: dict[str, str | None] = {}
        self.proxied = bool(urllib.request.getproxies())
        self.reached = False  # some request of this run got through

    def resolve(self, host: str) -> str | None:
        """Why `host` cannot be resolved (None: it can)."""
        if host not in self.errors:
            try:
                socket.getaddrinfo(host, None)
                self.errors[host] = None
            except (socket.gaierror, UnicodeError) as e:
                self.errors[host] = getattr(e, "strerror", None) or str(e)
        return self.errors[host]

    def check(self, entry: Entry) -> str | None:
        """None when `entry`'s host resolves, else its one-line failure; NoNetwork when no host resolves."""
        host = urlparse(entry.url).hostname or ""
        if self.proxied or (err := self.resolve(host)) is None:
            return None
        if not self.reached and all(self.resolve(h) is not None for h in self.hosts):
            raise NoNetwork(f"no network: cannot resolve {', '.join(self.hosts[:3])} ({err}); nothing was "
                            "downloaded: connect to the internet (or fix the catalog's URLs) and rerun")
        return f"{entry.name}: cannot resolve the host {host} of {entry.url} ({err}); check the URL"

    def failed(self, message: str) -> None:
        """A download failed: with no request through yet and no route to any host, that is no network."""
        if not self.reached and "Network is unreachable" in message:
            raise NoNetwork(f"no network: {short_error(message)}; connect to the internet and rerun")


def fetch_one(entry: Entry, opts: FetchOptions, archive: Path, net: Network | None = None) -> Outcome:
    folder = opts.out / entry.name
    existing = verify_existing(folder, entry, opts)
    if existing is not None:
        return Outcome(entry.name, "verified", existing, "already downloaded, checksum ok")
    check_youtube_runtime(entry)
    net = net or Network([entry])
    problem = net.check(entry)
    if problem:
        return Outcome(entry.name, "failed", None, problem)
    existed = folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    wait = opts.retry_wait
    for attempt in range(opts.retries + 1):
        try:
            path, note = _download(entry, folder, opts)
            net.reached = True
            break
        except _Refused as e:
            net.reached = True
            return Outcome(entry.name, "refused", None, str(e))
        except _Failed as e:
            if any(s in str(e) for s in ("No space left", "Disk quota", "File too large")):
                raise InputError(f"{folder}: disk full while downloading {entry.name} ({e}); free space and "
                                 "rerun: the partial download resumes") from None
            net.failed(str(e))
            if attempt == opts.retries:
                if not existed and not any(folder.iterdir()):
                    folder.rmdir()  # nothing was written: leave no empty folder
                return Outcome(entry.name, "failed", None, f"{entry.name}: {entry.url}: {short_error(str(e))} "
                               f"(after {attempt + 1} attempts; rerun to resume)")
            time.sleep(wait)
            wait *= 2
    try:
        info = probe(str(path))
    except InputError as e:
        path.unlink(missing_ok=True)
        for extra in folder.glob(f"{entry.id}.info.json"):
            extra.unlink()
        return Outcome(entry.name, "failed", None, f"{entry.name}: {entry.url} did not deliver a video ({e}); "
                       "the file was deleted: check the URL")
    digest = sha256_file(path)
    write_text_atomic(path.with_name(path.name + ".sha256"), f"{digest}  {path.name}\n")
    rel = path.resolve().relative_to(opts.out.resolve())  # yt-dlp gives an absolute path; --out may be relative
    record = {"name": entry.name, "id": entry.id, "url": entry.url, "file": str(rel),
              "sha256": digest, "bytes": path.stat().st_size, "codec": info.codec,
              "size": [info.width, info.height], "duration_s": round(info.duration_s, 3), "licence": note,
              "time": time.strftime("%Y-%m-%dT%H:%M:%S")}
    with open(archive, "a") as f:
        f.write(json.dumps(record) + "\n")
    return Outcome(entry.name, "downloaded", path, note)


def fetch(entries: list[Entry], opts: FetchOptions) -> list[Outcome]:
    """Fetch each entry in turn; disk-full, unwritable folders and no network stop everything with one line
    (no network: after removing the empty folders this run made)."""
    made = [p for p in (opts.out, *opts.out.parents) if not p.exists()]  # deepest first
    archive = opts.out / "archive.jsonl"
    new_archive = not archive.exists()
    try:
        opts.out.mkdir(parents=True, exist_ok=True)
        archive.touch()
        net = Network(entries)
        return [fetch_one(e, opts, archive, net) for e in entries]
    except NoNetwork:
        if new_archive and archive.exists() and archive.stat().st_size == 0:
            archive.unlink()
        for p in made:
            with contextlib.suppress(OSError):  # only empty folders go
                p.rmdir()
        raise
    except OSError as e:
        if e.errno in DISK_FULL:
            raise InputError(f"{opts.out}: disk full while downloading ({e.strerror}); free space and rerun: "
                             "partial downloads resume") from None
        raise InputError(f"{opts.out}: cannot write ({e.strerror}); choose a writable --out") from None


def status(entries: list[Entry], out: Path) -> list[dict]:
    """What is on disk for each entry (no hashing): complete, partial or missing, with sizes."""
    rows = []
    for e in entries:
        folder = out / e.name
        path, partial = finished_file(folder, e), partial_bytes(folder, e)
        if path is not None:
            sidecar = path.with_name(path.name + ".sha256").exists()
            rows.append({"name": e.name, "state": "complete" if sidecar else "unverified", "file": str(path),
                         "bytes": path.stat().st_size})
        elif partial:
            rows.append({"name": e.name, "state": "partial", "file": None, "bytes": partial})
        else:
            rows.append({"name": e.name, "state": "missing", "file": None, "bytes": 0})
    return rows
