"""The SHA-256 of a file: sources, checkpoints and the files of a shard folder are identified by it."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path


def sha256_file(path: Path, progress: Callable[[int], None] | None = None) -> str:
    """SHA-256 of a file, read in 8 MB chunks (`progress` gets each chunk's size)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(8 << 20):
            h.update(chunk)
            if progress:
                progress(len(chunk))
    return h.hexdigest()
