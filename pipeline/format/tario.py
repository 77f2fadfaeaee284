"""Byte-reproducible WebDataset tar shards and their DALI index (`wds2idx` v1.2) files.

Tar members carry fixed metadata (mtime 0, uid/gid 0, mode 0644), so the same samples give the
same bytes on any machine. Every member's data offset is recorded while writing, which gives the
DALI index for free and lets a loader read any single frame with one `pread`.
"""

from __future__ import annotations

import io
import os
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.files import atomic_open


@dataclass
class Member:
    name: str
    offset: int  # byte offset of the member's data in the tar
    size: int


@dataclass
class ShardWriter:
    """Writes samples (a key and its named components) to `path` via a temporary file.

    `close()` fsyncs and renames the tar into place and writes `<stem>.idx` beside it.
    """

    path: Path
    samples: list[list[Member]] = field(default_factory=list)

    def __post_init__(self):
        self.tmp = self.path.with_name(self.path.name + ".tmp")
        self._f = open(self.tmp, "wb")  # noqa: SIM115 (closed in close()/abort())
        self._tar = tarfile.open(fileobj=self._f, mode="w", format=tarfile.USTAR_FORMAT)  # noqa: SIM115

    @property
    def bytes_written(self) -> int:
        return self._tar.offset

    def add_sample(self, key: str, components: list[tuple[str, bytes]]) -> list[Member]:
        """Append one sample: members `key.ext` in the given order. Returns their offsets."""
        if "." in key or "/" in key:
            raise ValueError(f"sample key {key!r} must not contain '.' or '/'")
        members = []
        for ext, data in components:
            info = tarfile.TarInfo(f"{key}.{ext}")
            info.size, info.mtime, info.mode = len(data), 0, 0o644
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            before = self._tar.offset
            self._tar.addfile(info, io.BytesIO(data))
            header = self._tar.offset - before - _padded(len(data))
            members.append(Member(info.name, before + header, len(data)))
        self.samples.append(members)
        return members

    def close(self) -> int:
        """Finish the tar, publish it and its index; returns the tar's size in bytes."""
        self._tar.close()
        self._f.flush()
        os.fsync(self._f.fileno())
        self._f.close()
        size = self.tmp.stat().st_size
        os.replace(self.tmp, self.path)
        write_index(index_path(self.path), self.samples)
        return size

    def abort(self) -> None:
        if not self._f.closed:
            self._f.close()
        self.tmp.unlink(missing_ok=True)


def _padded(n: int) -> int:
    return (n + 511) // 512 * 512


def index_path(tar_path: Path) -> Path:
    """`shard-000001.tar` -> `shard-000001.idx`, the name DALI's wds2idx gives it."""
    return tar_path.with_name(tar_path.name.split(".", 1)[0] + ".idx")


def write_index(path: Path, samples: list[list[Member]]) -> None:
    """DALI webdataset index v1.2: a header line, then per sample `ext offset size name` repeated."""
    with atomic_open(path) as f:
        f.write(f"v1.2 {len(samples)}\n")
        for members in samples:
            f.write(" ".join(f"{m.name.split('.', 1)[1]} {m.offset} {m.size} {m.name}" for m in members) + "\n")


def read_index(path: Path) -> list[list[Member]]:
    """Parse a wds2idx v1.2 file back into samples of members."""
    lines = Path(path).read_text().splitlines()
    version, n = lines[0].split()
    if version != "v1.2":
        raise ValueError(f"{path}: index version {version}, expected v1.2")
    samples = []
    for line in lines[1:]:
        parts = line.split()
        samples.append([Member(parts[i + 3], int(parts[i + 1]), int(parts[i + 2])) for i in range(0, len(parts), 4)])
    if len(samples) != int(n):
        raise ValueError(f"{path}: header says {n} samples, found {len(samples)}")
    return samples


def read_range(path: Path, offset: int, size: int) -> bytes:
    """One member's bytes by offset (a single pread)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        data = os.pread(fd, size, offset)
    finally:
        os.close(fd)
    if len(data) != size:
        raise OSError(f"{path}: short read at {offset} ({len(data)} of {size} bytes); the shard is truncated")
    return data
