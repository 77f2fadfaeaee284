"""Whole-file writes that a kill cannot leave half-done: write a temporary file beside the target,
fsync it, rename it over the target. A kill leaves either the old file or the new one."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import IO


@contextlib.contextmanager
def atomic_open(path: Path, mode: str = "w") -> Iterator[IO]:
    """open() for writing `path` atomically; on an exception the target is left untouched."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(path: Path, text: str) -> None:
    with atomic_open(path) as f:
        f.write(text)


def write_json_atomic(path: Path, obj, indent: int | None = 1) -> None:
    with atomic_open(path) as f:
        json.dump(obj, f, indent=indent)
