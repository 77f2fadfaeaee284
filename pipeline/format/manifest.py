"""dataset.json's `files`: the size and SHA-256 of every file of a finished folder but dataset.json itself.

Copies of the folder (an upload to object storage, a staged cache on a training node) are checked
against it file by file. Folders made before this key have none; their shards' `bytes` still hold.
"""

from __future__ import annotations

import hashlib
from pathlib import Path


def file_entry(path: Path) -> dict:
    """{"bytes": size, "sha256": hex digest} of one file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(8 << 20):
            h.update(chunk)
    return {"bytes": path.stat().st_size, "sha256": h.hexdigest()}


def expected_files(index: dict) -> dict[str, dict]:
    """rel path -> {"bytes"[, "sha256"]} for every file a finished folder holds besides dataset.json: the
    `files` manifest where recorded, else sizes only for shards (DALI indexes and tables unchecked)."""
    if index.get("files"):
        return dict(index["files"])
    out: dict[str, dict] = {}
    for s in index["shards"]:
        out[f"shards/{s['name']}"] = {"bytes": s["bytes"]}
        out[f"shards/{s['name'].split('.', 1)[0]}.idx"] = {}
    for v in index["videos"]:
        out[v["frames_table"]] = {}
    return out
