"""Whole-file writes that a kill cannot leave half-done: write a temporary file beside the target,
fsync it, rename it over the target. A kill leaves either the old file or the new one."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from pipeline.errors import DiskFullError, disk_full_cause


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
    except (OSError, RuntimeError) as e:  # torch's zip writer reports ENOSPC as RuntimeError("unexpected pos")
        cause = disk_full_cause(e)
        if cause is None:
            raise
        raise DiskFullError(f"{path}: disk full while writing it ({cause.strerror}); nothing was written under "
                            "that name: free space, then run the same command again") from e
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(path: Path, text: str) -> None:
    with atomic_open(path) as f:
        f.write(text)


def write_json_atomic(path: Path, obj, indent: int | None = 1) -> None:
    with atomic_open(path) as f:
        json.dump(obj, f, indent=indent)


def save_image_atomic(path: Path, image, **kwargs) -> Path:
    """Write a PIL image or a matplotlib figure as PNG atomically: a kill or a full disk never leaves a
    half-written picture under the final name. `kwargs` go to savefig (dpi, bbox_inches)."""
    path = Path(path)
    with atomic_open(path, "wb") as f:
        if hasattr(image, "savefig"):
            image.savefig(f, format="png", **kwargs)
        else:
            image.save(f, format="PNG", **kwargs)
    return path
