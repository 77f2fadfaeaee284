"""`dataset.json` and the per-video frame tables: the read side of a shard folder.

Layout of DIR (see docs/FORMAT.md):
  dataset.json            videos, shards, settings (written last: the folder is complete when it exists)
  shards/shard-NNNNNN.tar WebDataset samples: one window of consecutive frames of one shot each
  shards/shard-NNNNNN.idx DALI wds2idx v1.2 index of the tar
  frames/<video>.npz      one row per distinct stored frame: time, frame index, shot, faces, location
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.errors import InputError
from pipeline.files import atomic_open
from pipeline.format import read_range

FORMAT_VERSION = 1
TABLE_FIELDS = ("t", "index", "shot", "faces", "blurred", "shard", "offset", "size")


@dataclass
class FrameTable:
    """Distinct stored frames of one video in time order; `shard/offset/size` locate one copy."""

    t: np.ndarray  # float64 source presentation time (s)
    index: np.ndarray  # int64 frame index as decoded (presentation order from the first frame)
    shot: np.ndarray  # int32 shot number
    faces: np.ndarray  # int16 faces detected on this frame
    blurred: np.ndarray  # int16 boxes hidden on this frame (own + carried from neighbours)
    shard: np.ndarray  # int32 position of the shard in dataset.json's shard list
    offset: np.ndarray  # int64 byte offset of the JPEG in that shard
    size: np.ndarray  # int32 JPEG size in bytes
    shots: np.ndarray  # float64 [n_shots, 2] start, end (s)

    def __len__(self) -> int:
        return len(self.t)

    def save(self, path: Path) -> None:
        with atomic_open(path, "wb") as f:
            np.savez(f, shots=self.shots, **{k: getattr(self, k) for k in TABLE_FIELDS})

    @classmethod
    def load(cls, path: Path) -> FrameTable:
        with np.load(path) as z:
            return cls(shots=z["shots"], **{k: z[k] for k in TABLE_FIELDS})


class Dataset:
    """A finished shard folder: its manifest, frame tables and random access to frames."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        manifest = self.root / "dataset.json"
        if not manifest.exists():
            hint = (f"units are still pending: run `dora-data index {self.root}`" if (self.root / ".work").exists()
                    else f"make it with `dora-data shard --out {self.root}`")
            raise InputError(f"{manifest}: not found, {self.root} is not a finished shard folder; {hint}")
        try:
            self.meta = json.loads(manifest.read_text())
        except json.JSONDecodeError as e:
            raise InputError(f"{manifest}: not valid JSON ({e.msg}); rebuild with `dora-data index`") from None
        if self.meta.get("format") != FORMAT_VERSION:
            raise InputError(f"{manifest}: format {self.meta.get('format')}, this code reads {FORMAT_VERSION}; "
                             "re-run `dora-data shard` with this version")
        self.videos: list[dict] = self.meta["videos"]
        self.shards: list[dict] = self.meta["shards"]
        self._tables: dict[str, FrameTable] = {}

    def table(self, video: str) -> FrameTable:
        if video not in self._tables:
            entry = next(v for v in self.videos if v["name"] == video)
            self._tables[video] = FrameTable.load(self.root / entry["frames_table"])
        return self._tables[video]

    def shard_path(self, i: int) -> Path:
        return self.root / "shards" / self.shards[i]["name"]

    def read_frame(self, video: str, row: int) -> bytes:
        """JPEG bytes of stored frame `row` of `video` (one pread)."""
        tab = self.table(video)
        return read_range(self.shard_path(int(tab.shard[row])), int(tab.offset[row]), int(tab.size[row]))
