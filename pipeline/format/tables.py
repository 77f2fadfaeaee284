"""Per-video frame tables (frames/<video>.npz): one row per distinct stored frame, where its JPEG lies."""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.errors import InputError
from pipeline.files import atomic_open

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
        """The table in `path`; a missing or damaged file is one InputError line saying how to rebuild it."""
        try:
            with np.load(path) as z:
                return cls(shots=z["shots"], **{k: z[k] for k in TABLE_FIELDS})
        except FileNotFoundError:
            why = "is missing"
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
            why = f"is damaged ({str(e).splitlines()[0][:80] if str(e) else type(e).__name__})"
        folder = Path(path).parent.parent
        raise InputError(f"{path}: this video's frame table {why}, so the shard folder {folder} is damaged (its "
                         "dataset.json lists the video); shard the same inputs again into a new --out (or delete "
                         f"{folder} first)")
