"""The one per-user cache folder: quantised models, local copies of remote shard folders, upload work."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """$DORA_CACHE, else ${XDG_CACHE_HOME:-~/.cache}/dora-wt."""
    if os.environ.get("DORA_CACHE"):
        return Path(os.environ["DORA_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "dora-wt"
