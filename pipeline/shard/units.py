"""Work units (time segments of one video) and their on-disk results under DIR/.work/.

A unit's result is two files: `uNNNNN.jpg.bin` (the unit's JPEG frames, back to back) and
`uNNNNN.json` (frame times, byte ranges, faces, cuts). Both are written under temporary names
and renamed, the JSON last: a unit is complete exactly when its JSON exists. A rerun skips
complete units, and a unit's bytes do not depend on which process or machine made it.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

from pipeline.files import write_json_atomic
from pipeline.format import ShardFolder
from pipeline.shard.parts import parse_part  # noqa: F401 (its former home: kept importable)


@dataclass(frozen=True)
class Unit:
    """Source time range [start_s, end_s) of one video (end_s None: to the end of the video)."""

    video: str
    index: int
    start_s: float
    end_s: float | None

    @property
    def name(self) -> str:
        return ShardFolder.unit_name(self.index)


def plan_units(video: str, start_s: float, duration_s: float, segment_s: float) -> list[Unit]:
    """Cut [start_s, start_s + duration_s) into segments of segment_s; the last runs to the end
    (and absorbs a tail shorter than 5% of a segment)."""
    n = max(1, math.ceil(duration_s / segment_s - 0.05))
    return [Unit(video, i, start_s + i * segment_s, None if i == n - 1 else start_s + (i + 1) * segment_s)
            for i in range(n)]


def select_part(units: list[Unit], part: tuple[int, int]) -> list[Unit]:
    """The i-th of n partitions (round robin over all units of all videos, in a fixed order)."""
    i, n = part
    return [u for k, u in enumerate(units) if k % n == i]


def is_complete(out: Path, unit: Unit) -> bool:
    return ShardFolder(out).unit_record(unit.video, unit.index).exists()


def read_unit(out: Path, video: str, index: int) -> dict:
    """The JSON record of a complete unit."""
    with open(ShardFolder(out).unit_record(video, index)) as f:
        return json.load(f)


class UnitWriter:
    """Appends a unit's JPEG frames to a temporary blob; `finish` publishes blob then JSON."""

    def __init__(self, out: Path, unit: Unit):
        folder = ShardFolder(out)
        self.dir = folder.video_work(unit.video)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.unit = unit
        self.record = folder.unit_record(unit.video, unit.index)
        self.blob = folder.unit_blob(unit.video, unit.index)
        self.tmp = self.blob.with_name(f"{self.blob.name}.tmp{os.getpid()}")
        self.f = open(self.tmp, "wb")  # noqa: SIM115 (closed in finish()/abort())
        self.frames: list[list] = []

    def add_frame(self, t: float, local_index: int, jpg: bytes, n_faces: int, n_blurred: int) -> None:
        self.frames.append([t, local_index, self.f.tell(), len(jpg), n_faces, n_blurred])
        self.f.write(jpg)

    def finish(self, n_decoded: int, cuts: list[float], last_t: float | None, last_dt: float) -> None:
        self.f.flush()
        os.fsync(self.f.fileno())
        self.f.close()
        record = {"video": self.unit.video, "unit": self.unit.index, "start_s": self.unit.start_s,
                  "end_s": self.unit.end_s, "n_decoded": n_decoded, "last_t": last_t, "last_dt": last_dt,
                  "cuts": cuts, "frame_fields": ["t", "local_index", "offset", "size", "faces", "blurred"],
                  "frames": self.frames}
        os.replace(self.tmp, self.blob)
        write_json_atomic(self.record, record)

    def abort(self) -> None:
        if not self.f.closed:
            self.f.close()
        self.tmp.unlink(missing_ok=True)

