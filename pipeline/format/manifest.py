"""dataset.json's `files`: the size and SHA-256 of every file of a finished folder but dataset.json itself.

Copies of the folder (an upload to object storage, a staged cache on a training node) are checked
against it file by file. Folders made before this key have none; their shards' `bytes` still hold.
"""

from __future__ import annotations

from pathlib import Path

from pipeline.files import sha256_file


def file_entry(path: Path) -> dict:
    """{"bytes": size, "sha256": hex digest} of one file."""
    return {"bytes": path.stat().st_size, "sha256": sha256_file(path)}


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
