"""A shard folder's paths and names, in one place (docs/FORMAT.md): its writer, readers and checks use them.

  DIR/dataset.json               the dataset index: videos, shards, settings (written last: complete when present)
  DIR/shards/shard-NNNNNN.tar    WebDataset shards, and their DALI indexes shard-NNNNNN.idx
  DIR/frames/<video>.npz         frame tables (pipeline/format/tables.py)
  DIR/.work/settings.json        the shard options while units are pending
  DIR/.work/<video>/video.json   a video's probe record; uNNNNN.json + uNNNNN.jpg.bin: one work unit
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import InputError

FORMAT_VERSION = 1  # of dataset.json and the frame tables
INDEX = "dataset.json"
WORK = ".work"


@dataclass(frozen=True)
class ShardFolder:
    """The paths of one shard folder; nothing is created or read until a method says so."""

    root: Path

    def __init__(self, root: str | Path):
        object.__setattr__(self, "root", Path(root))

    # ---- the finished folder
    @property
    def index(self) -> Path:
        return self.root / INDEX

    @property
    def shards_dir(self) -> Path:
        return self.root / "shards"

    @property
    def frames_dir(self) -> Path:
        return self.root / "frames"

    @staticmethod
    def shard_name(i: int) -> str:
        return f"shard-{i:06d}.tar"

    @staticmethod
    def frames_table_name(video: str) -> str:
        """The frame table's path relative to the folder, as dataset.json records it."""
        return f"frames/{video}.npz"

    def is_finished(self) -> bool:
        return self.index.exists()

    def require_finished(self) -> Path:
        """The index path; InputError (one line, with what to run) when the folder is not a finished one."""
        if not self.index.exists():
            hint = (f"units are still pending: run `dora-data index {self.root}`" if self.work.exists()
                    else f"make it with `dora-data shard --out {self.root}`")
            raise InputError(f"{self.index}: not found, {self.root} is not a finished shard folder; {hint}")
        return self.index

    def read_index(self) -> dict | None:
        """dataset.json as a dict, None when the folder has none yet."""
        if not self.index.exists():
            return None
        try:
            return json.loads(self.index.read_text())
        except json.JSONDecodeError as e:
            raise InputError(f"{self.index}: not valid JSON ({e.msg}); rebuild with `dora-data index`") from None

    # ---- work in progress
    @property
    def work(self) -> Path:
        return self.root / WORK

    @property
    def settings_file(self) -> Path:
        return self.work / "settings.json"

    def video_work(self, video: str) -> Path:
        return self.work / video

    def video_record(self, video: str) -> Path:
        return self.video_work(video) / "video.json"

    @staticmethod
    def unit_name(index: int) -> str:
        return f"u{index:05d}"

    def unit_record(self, video: str, index: int) -> Path:
        return self.video_work(video) / f"{self.unit_name(index)}.json"

    def unit_blob(self, video: str, index: int) -> Path:
        return self.video_work(video) / f"{self.unit_name(index)}.jpg.bin"

    def saved_settings(self) -> dict | None:
        """The shard options this folder was made with (pending units' settings.json, else dataset.json's)."""
        if self.settings_file.exists():
            return json.loads(self.settings_file.read_text())
        meta = self.read_index()
        return meta["settings"] if meta is not None else None
