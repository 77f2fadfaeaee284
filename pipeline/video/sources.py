"""Turn command-line inputs (video files, fetch folders) into named sources with checksums."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import InputError
from pipeline.files import sha256_file, write_json_atomic

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")  # a video's name: file names, unit names
VIDEO_EXTS = {".mp4", ".mkv", ".webm", ".mov", ".avi", ".m4v", ".ts", ".mpg", ".mpeg", ".flv", ".wmv"}


@dataclass(frozen=True)
class Source:
    name: str  # the video's name in the dataset (fetch folder name, else the file's stem)
    path: Path


def video_name(text: str) -> str:
    """A dataset name from a folder or file stem: letters, digits, '_' and '-', at most 64 characters."""
    name = re.sub(r"[^A-Za-z0-9_-]+", "_", text).strip("_-")[:64]
    return name or "video"


def _videos_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in VIDEO_EXTS)


def resolve_inputs(inputs: list[str]) -> list[Source]:
    """Video files stay as given; a folder holding videos gives each of them (named after the
    folder when it holds exactly one, as `dora-data fetch` lays out `data/raw/<name>/`); a folder of
    such folders gives all of theirs."""
    sources: list[Source] = []
    for text in inputs:
        p = Path(text)
        if p.is_dir():
            before = len(sources)
            direct = _videos_in(p)
            if len(direct) == 1:
                sources.append(Source(video_name(p.name), direct[0]))
            else:
                sources += [Source(video_name(v.stem), v) for v in direct]
            for sub in sorted(q for q in p.iterdir() if q.is_dir() and not q.name.startswith(".")):
                inner = _videos_in(sub)
                if len(inner) == 1:
                    sources.append(Source(video_name(sub.name), inner[0]))
                else:
                    sources += [Source(video_name(f"{sub.name}_{v.stem}"), v) for v in inner]
            if len(sources) == before:
                raise InputError(f"{p}: no video files in this folder; give video files, "
                                 "or run `dora-data fetch` to fill data/raw")
        else:
            if not p.exists():
                hint = "run `dora-data fetch` first" if str(p).startswith("data/raw") else "check the path"
                raise InputError(f"{p}: no such file or folder; {hint}")
            sources.append(Source(video_name(p.stem), p))
    seen: dict[str, Path] = {}
    for s in sources:
        if not NAME_RE.match(s.name):
            raise InputError(f"{s.path}: cannot derive a video name from it; rename the file")
        if s.name in seen and seen[s.name].resolve() != s.path.resolve():
            raise InputError(f"{s.path}: same video name {s.name!r} as {seen[s.name]}; rename one of them")
        seen[s.name] = s.path
    unique = {s.name: s for s in sources}
    return sorted(unique.values(), key=lambda s: s.name)


def sha256_of(path: Path, cache_dir: Path | None = None, progress=None) -> str:
    """SHA-256 of a file. Reuses a `<file>.sha256` written by `dora-data fetch`, or a cached value
    in `cache_dir` recorded for the same size and modification time."""
    st = path.stat()
    sidecar = path.with_name(path.name + ".sha256")
    if sidecar.exists() and sidecar.stat().st_mtime >= st.st_mtime:
        digest = sidecar.read_text().split()[0]
        if re.fullmatch(r"[0-9a-f]{64}", digest):
            return digest
    cache = cache_dir / "source.json" if cache_dir is not None else None
    if cache is not None and cache.exists():
        c = json.loads(cache.read_text())
        if c.get("size") == st.st_size and c.get("mtime_ns") == st.st_mtime_ns:
            return c["sha256"]
    digest = sha256_file(path, progress)
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(cache, {"path": str(path.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns,
                                  "sha256": digest})
    return digest
