"""A shard folder's paths and names, in one place (docs/FORMAT.md): its writer, readers and checks use them.

  DIR/dataset.json               the dataset index: videos, shards, settings (written last: complete when present)
  DIR/shards/shard-NNNNNN.tar    WebDataset shards, and their DALI indexes shard-NNNNNN.idx
  DIR/frames/<video>.npz         frame tables (pipeline/format/tables.py)
  DIR/.work/settings.json        the shard options while units are pending
  DIR/.work/<video>/video.json   a video's probe record; uNNNNN.json + uNNNNN.jpg.bin: one work unit
"""

from __future__ import annotations

import json
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import InputError

FORMAT_VERSION = 1  # of dataset.json and the frame tables
INDEX = "dataset.json"
WORK = ".work"


@dataclass(frozen=True)
class WorkVideo:
    """A video `shard` recorded under .work: how many of its work units are complete."""

    name: str
    source: str
    done: int
    total: int
    record: dict  # its video.json

    @property
    def complete(self) -> bool:
        return self.done >= self.total


def describe_unfinished(videos: list[WorkVideo], most: int = 4) -> str:
    """'2 videos are unfinished: a (1 of 4 units), b (0 of 2 units)' (at most `most` named)."""
    named = ", ".join(f"{v.name} ({v.done} of {v.total} units)" for v in videos[:most])
    more = f" and {len(videos) - most} more" if len(videos) > most else ""
    return f"{len(videos)} video{'s are' if len(videos) > 1 else ' is'} unfinished: {named}{more}"


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
            hint = self.next_step() if self.work.exists() else f"make it with `dora-data shard --out {self.root}`"
            raise InputError(f"{self.index}: not found, {self.root} is not a finished shard folder; {hint}")
        return self.index

    def read_index(self) -> dict | None:
        """dataset.json as a dict, None when the folder has none yet."""
        if not self.index.exists():
            return None
        try:
            return json.loads(self.index.read_text())
        except json.JSONDecodeError as e:  # written atomically, so damaged afterwards: the units are gone
            raise InputError(f"{self.index}: not valid JSON ({e.msg}); it was damaged after it was written and "
                             f"cannot be rebuilt from the shards: move {self.root} aside and run `dora-data shard` "
                             f"again with the same inputs and options (--out {self.root})") from None

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

    def work_videos(self, exclude: Collection[str] = ()) -> list[WorkVideo]:
        """The videos catalogued under .work (by `shard`'s probe), but not in `exclude`, in name order."""
        found = []
        for vdir in sorted(self.work.iterdir()) if self.work.exists() else []:
            record = self.video_record(vdir.name)
            if not record.exists():
                continue
            meta = json.loads(record.read_text())
            if meta["name"] in exclude:
                continue
            done = sum(self.unit_record(vdir.name, i).exists() for i in range(meta["n_units"]))
            found.append(WorkVideo(meta["name"], meta["source"], done, meta["n_units"], meta))
        return found

    def next_step(self) -> str:
        """What to run on a folder with work in progress (a killed or partial `shard`), as advice text."""
        videos = self.work_videos(exclude=self.indexed_names())
        unfinished = [v for v in videos if not v.complete]
        if unfinished:
            return (f"{describe_unfinished(unfinished)}: rerun `dora-data shard` with the same inputs and options "
                    f"(--out {self.root}; it resumes where it stopped)")
        if videos:
            return f"all work units are done: run `dora-data index {self.root}`"
        return f"no video was recorded yet: rerun `dora-data shard --out {self.root}` with your inputs"

    def indexed_names(self) -> set[str]:
        """Names of the videos dataset.json holds (none without one)."""
        meta = self.read_index()
        return {v["name"] for v in meta["videos"]} if meta is not None else set()

    def saved_settings(self) -> dict | None:
        """The shard options this folder was made with (pending units' settings.json, else dataset.json's)."""
        if self.settings_file.exists():
            return json.loads(self.settings_file.read_text())
        meta = self.read_index()
        return meta["settings"] if meta is not None else None
