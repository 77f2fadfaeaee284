"""Output folders: created on demand and proven writable before any work starts."""

from __future__ import annotations

import os
from pathlib import Path

from pipeline.errors import InputError


def check_writable(out: Path) -> None:
    """Create `out` if needed and prove a file can be written there."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe_file = out / f".write-test-{os.getpid()}"
        probe_file.write_bytes(b"")
        probe_file.unlink()
    except OSError as e:
        raise InputError(f"{out}: cannot write the output folder ({e.strerror}); choose a writable --out") from None
