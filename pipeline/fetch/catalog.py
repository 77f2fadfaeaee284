"""The list of videos to fetch: data/walking_tours.csv (the paper's 10 CC-BY videos) or a user's own.

CSV columns: name, id, url, city, license, notes. `name` becomes the folder under data/raw and the
video's name in shards; `id` the file name (empty: taken from the URL). Names and ids can never
leave the output folder, and only http(s) URLs are accepted.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from pipeline.errors import InputError
from pipeline.video import NAME_RE

BUILTIN = Path(__file__).resolve().parents[2] / "data" / "walking_tours.csv"
COLUMNS = ("name", "id", "url", "city", "license", "notes")
ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


@dataclass(frozen=True)
class Entry:
    name: str
    id: str
    url: str
    city: str = ""
    license: str = ""
    notes: str = ""


def _id_from_url(url: str) -> str:
    stem = Path(urlparse(url).path).stem
    return re.sub(r"[^A-Za-z0-9_-]+", "_", stem).strip("_")[:64]


def read_catalog(path: Path = BUILTIN) -> list[Entry]:
    """Parse and check every row; a bad row is an InputError naming the file and line."""
    if not path.exists():
        raise InputError(f"{path}: catalog not found; give --catalog with a CSV of name,id,url,city,license,notes")
    entries: list[Entry] = []
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in ("name", "url") if c not in (reader.fieldnames or [])]
        if missing:
            raise InputError(f"{path}: line 1: header lacks {', '.join(missing)}; expected {','.join(COLUMNS)}")
        for row in reader:
            line = reader.line_num
            if None in row:  # more fields than columns (fewer is fine: trailing ones are optional)
                raise InputError(f"{path}: line {line}: wrong number of fields; expected {','.join(COLUMNS)}")
            name, url = (row.get("name") or "").strip(), (row.get("url") or "").strip()
            vid = (row.get("id") or "").strip() or _id_from_url(url)
            if not NAME_RE.match(name):
                raise InputError(f"{path}: line {line}: name {name!r} must be 1-64 letters, digits, '_' or '-' "
                                 "(no paths); fix the catalog")
            if not ID_RE.match(vid):
                raise InputError(f"{path}: line {line}: id {vid!r} must be 1-64 letters, digits, '_' or '-' "
                                 "(no paths); fix the catalog")
            scheme = urlparse(url).scheme.lower()
            if scheme not in ("http", "https") or not urlparse(url).netloc:
                raise InputError(f"{path}: line {line}: URL {url!r} is not http(s); only http and https are fetched")
            if any(e.name == name for e in entries):
                raise InputError(f"{path}: line {line}: name {name!r} appears twice; names must be unique")
            entries.append(Entry(name, vid, url, *((row.get(c) or "").strip() for c in ("city", "license", "notes"))))
    if not entries:
        raise InputError(f"{path}: no videos listed; add rows under the header {','.join(COLUMNS)}")
    return entries


def select(entries: list[Entry], only: tuple[str, ...]) -> list[Entry]:
    """The entries named in `only` (all when empty); an unknown name is an error listing the valid ones."""
    if not only:
        return entries
    names = {e.name for e in entries}
    unknown = [n for n in only if n not in names]
    if unknown:
        raise InputError(f"--only {unknown[0]}: no such video in the catalog; valid names: {', '.join(sorted(names))}")
    return [e for e in entries if e.name in only]
