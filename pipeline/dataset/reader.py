"""The read side of a finished shard folder: its dataset index (dataset.json), frame tables and frames.

The folder's layout is `pipeline.format.ShardFolder`'s (see docs/FORMAT.md).
"""

from __future__ import annotations

from pathlib import Path

from pipeline.errors import InputError
from pipeline.format import FORMAT_VERSION, FrameTable, ShardFolder, read_range


class Dataset:
    """A finished shard folder: its dataset index, frame tables and random access to frames."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.folder = ShardFolder(self.root)
        index = self.folder.require_finished()
        self.meta = self.folder.read_index()
        if self.meta.get("format") != FORMAT_VERSION:
            raise InputError(f"{index}: format {self.meta.get('format')}, this code reads {FORMAT_VERSION}; "
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
        return self.folder.shards_dir / self.shards[i]["name"]

    def read_frame(self, video: str, row: int) -> bytes:
        """JPEG bytes of stored frame `row` of `video` (one pread)."""
        tab = self.table(video)
        return read_range(self.shard_path(int(tab.shard[row])), int(tab.offset[row]), int(tab.size[row]))
