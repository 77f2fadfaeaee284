"""`shard --out URL` and `index URL`: the work happens in a local folder, mirrored to object storage.

The local `--work-dir` is an ordinary shard folder. The remote folder holds the same paths, and its
commit points are the ones the local folder has, in the same order:
  - a work unit counts as done remotely once its marker `.work/<video>/uNNNNN.json` is there, and that
    marker is uploaded after the unit's frames (and, for unit 0, the source's checksum);
  - a finished folder is one with `dataset.json`, uploaded after every shard, DALI index and frame table
    it lists (each checked by size), and only then are the uploaded work units deleted.
A `kill -9` at any moment leaves either an object the commit points do not count, or nothing; a rerun
of the same command (on any machine: it pulls what it lacks) finishes the job.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from tqdm import tqdm

from pipeline.errors import InputError
from pipeline.files import cache_root, write_json_atomic
from pipeline.format import ShardFolder, expected_files
from pipeline.store.remote import RemoteFolder
from pipeline.store.stage import cache_path

WORK = ".work"
PUBLISHED = ".published.json"  # in the work folder: files of this folder uploaded, with their checksums


def default_work_dir(url: str) -> Path:
    """Where `shard --out URL` works unless --work-dir says: <cache>/work/<scheme>/<bucket>/<prefix>."""
    return cache_path(url, cache_root() / "work")


def unit_files(video: str, index: int) -> list[str]:
    """A unit's files relative to the folder, its marker (the JSON) last."""
    name = ShardFolder.unit_name(index)
    return [f"{WORK}/{video}/{name}.jpg.bin", f"{WORK}/{video}/{name}.json"]


class MirroredFolder:
    """A local shard folder (`local`) whose results are published to `url`."""

    def __init__(self, url: str, local: Path):
        self.remote = RemoteFolder(url)
        self.local = Path(local)
        self.folder = ShardFolder(self.local)
        self._done: set[str] = set()

    def open(self) -> MirroredFolder:
        """Check the URL can be written (one line if not), then bring down what the local copy lacks to
        decide what is done: the options, the remote dataset.json, and the list of finished units."""
        self.remote.check(write=True)
        self.local.mkdir(parents=True, exist_ok=True)
        settings = self.remote.read(f"{WORK}/settings.json")
        if settings is not None:  # the store's options rule (a reused work folder may hold another run's)
            self.folder.work.mkdir(parents=True, exist_ok=True)
            write_json_atomic(self.folder.settings_file, self._json(settings, "settings.json"))
        self._take_remote_index()
        self._done = {rel for rel in self.remote.listing(WORK) if rel.endswith(".json")}
        return self

    def _take_remote_index(self) -> None:
        """Use the remote dataset.json unless the local one extends it (published but not yet uploaded)."""
        data = self.remote.read("dataset.json")
        if data is None:
            return
        remote = self._json(data, "dataset.json")
        local = self.folder.read_index()
        if local is not None:
            names = [v["name"] for v in local["videos"]]
            if names[:len(remote["videos"])] == [v["name"] for v in remote["videos"]]:
                return
        for stale in (self.folder.shards_dir, self.folder.frames_dir, self.local / PUBLISHED):  # another index's
            shutil.rmtree(stale, ignore_errors=True) if stale.is_dir() else stale.unlink(missing_ok=True)
        listed = expected_files(remote)
        tables = {v["frames_table"]: listed.get(v["frames_table"], {}).get("sha256") for v in remote["videos"]}
        for rel in tables:  # small, and what summaries and checks of the folder read; the shards stay remote
            self.remote.download(rel, self.local / rel)
        write_json_atomic(self.local / PUBLISHED, tables)
        write_json_atomic(self.folder.index, remote)

    def _json(self, data: bytes, rel: str) -> dict:
        try:
            return json.loads(data)
        except ValueError:
            raise InputError(f"{self.remote}/{rel}: not valid JSON; it was damaged on the store: move the "
                             "folder aside and shard again") from None

    def unit_done(self, video: str, index: int) -> bool:
        """Whether the unit's marker is on the remote side (as listed by `open`)."""
        return f"{WORK}/{video}/{ShardFolder.unit_name(index)}.json" in self._done

    def push_start(self) -> None:
        """Upload the options and every video's probe record (idempotent; before any unit)."""
        if self.folder.settings_file.exists():  # a finished folder has none: its options are in dataset.json
            self.remote.upload(self.folder.settings_file, f"{WORK}/settings.json")
        for v in self.folder.work_videos():
            self.remote.upload(self.folder.video_record(v.name), f"{WORK}/{v.name}/video.json")

    def push_unit(self, video: str, index: int) -> None:
        """Upload a locally complete unit: its frames, the source checksum for unit 0, then its marker."""
        blob, marker = unit_files(video, index)
        self.remote.upload(self.local / blob, blob)
        source = f"{WORK}/{video}/source.json"
        if index == 0 and (self.local / source).exists():
            self.remote.upload(self.local / source, source)
        self.remote.upload(self.local / marker, marker)
        self._done.add(marker)

    def pull_work(self, quiet: bool = False) -> None:
        """Download every remote work file the local folder lacks (other parts' units), markers last; a unit's
        frames always come with its marker (a local leftover may be another run's)."""
        listing = self.remote.listing(WORK)
        local = {rel for rel in listing if (self.local / rel).exists()}
        markers = [r for r in listing if r.endswith(".json") and r not in local]
        blobs = [r[:-len(".json")] + ".jpg.bin" for r in markers]
        first = [r for r in listing if (r not in local and r not in markers) or r in blobs]
        todo = first + sorted(markers, key=lambda r: r.endswith("/video.json"))
        bar = tqdm(total=sum(listing[r] for r in todo), unit="B", unit_scale=True, desc="download units",
                   disable=quiet or not todo, dynamic_ncols=True)
        with bar:
            for rel in todo:
                self.remote.download(rel, self.local / rel, on_bytes=bar.update)

    def publish(self, quiet: bool = False) -> bool:
        """Upload the local finished folder: every listed file made here and not yet uploaded (by checksum, in
        `.published.json`), then dataset.json, then delete the remote work of the videos it holds. Files made
        elsewhere must be on the store at their listed size. False when there is no index."""
        index = self.folder.read_index()
        if index is None:
            return False
        have = self.remote.listing()
        want = expected_files(index)
        record = self.local / PUBLISHED
        sent = json.loads(record.read_text()) if record.exists() else {}
        here = {r for r in want if (self.local / r).exists()}
        lost = [r for r in want if r not in here and (r not in have or have[r] != want[r].get("bytes", have[r]))]
        if lost:
            raise InputError(f"{self.remote}/{lost[0]}: listed in dataset.json but missing or of another size on the "
                             f"store, and not in {self.local}; shard into a new --out")
        todo = [r for r in want if r in here and (r not in have or sent.get(r) != want[r].get("sha256"))]
        bar = tqdm(total=sum((self.local / r).stat().st_size for r in todo), unit="B", unit_scale=True,
                   desc="upload shards", disable=quiet or not todo, dynamic_ncols=True)
        with bar:
            for rel in todo:
                self.remote.upload(self.local / rel, rel)
                sent[rel] = want[rel].get("sha256")
                write_json_atomic(record, sent)
                bar.update((self.local / rel).stat().st_size)
        self.remote.upload(self.folder.index, "dataset.json")
        for name in [v["name"] for v in index["videos"]] + [d["name"] for d in index.get("dropped", [])]:
            self.remote.remove(f"{WORK}/{name}")
        left = {r.split("/")[1] for r in self.remote.listing(WORK) if r.count("/") >= 2}
        if not left:
            self.remote.remove(WORK)
        return True

    def push_logs(self) -> None:
        """Copy the local logs/ folder (per-part shard logs) next to the data."""
        logs = self.local / "logs"
        for path in sorted(logs.glob("*.log")) if logs.exists() else []:
            self.remote.upload(path, f"logs/{path.name}")


def local_for(out: Path | str, work_dir: Path | None) -> tuple[Path, str | None]:
    """(the local folder to work in, the URL to publish to or None) for an --out that may be a URL."""
    if isinstance(out, str):
        return Path(work_dir) if work_dir else default_work_dir(out), out
    return Path(out), None
