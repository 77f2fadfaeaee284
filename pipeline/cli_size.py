"""The SIZE option type of the `dora-data` command line (`shard --shard-size`, `fetch --rate-limit`)."""

from __future__ import annotations

import re

import click

SIZE_RE = re.compile(r"^\s*([0-9.]+(?:e[0-9]+)?)\s*([kmgt]?i?b?)?\s*$", re.I)
UNITS = {"": 1, "b": 1, "k": 1e3, "kb": 1e3, "m": 1e6, "mb": 1e6, "g": 1e9, "gb": 1e9, "t": 1e12, "tb": 1e12,
         "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


class ByteSize(click.ParamType):
    """A byte count written like 1GB, 500MB or 2GiB, at least `minimum` bytes."""

    name = "SIZE"

    def __init__(self, minimum: int = 1):
        self.minimum = minimum

    def convert(self, value, param, ctx):
        m = SIZE_RE.match(str(value))
        unit = (m.group(2) or "").lower() if m else None
        if not m or unit not in UNITS:
            self.fail(f"{value!r} is not a size like 1GB, 500MB or 2GiB", param, ctx)
        size = int(float(m.group(1)) * UNITS[unit])
        if size < self.minimum:
            self.fail(f"{value!r} is less than {self.minimum} bytes; give a size like 1GB or 500MB", param, ctx)
        return size
