"""Locks on output folders: two runs never write the same folder at once.

A lock is an `flock` on a file in the folder, so the kernel releases it when its holder exits in any
way, `kill -9` included: a lock left by a dead process never blocks (on NFS, the server's lock lease
does the same for a dead host). The file holds the holder's pid, host, start time and command, which
a refused run names. Whole-folder runs take `DIR/.lock` exclusively; `--part i/n` runs share it and
each takes `DIR/.lock.part-i-of-n` exclusively, so parts run side by side while a whole-folder run,
`index`, or the same part twice are refused. Lock files are removed when released.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import sys
import time
from pathlib import Path

from pipeline.errors import InputError

NO_LOCKS = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL}


class FolderBusy(InputError):
    """Another live process holds the folder: one line naming it, exit status 2."""


def _open_locked(path: Path, mode: int) -> int | None:
    """An fd of `path` holding flock `mode`, or None when another process holds a conflicting lock."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, mode | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        except OSError:
            os.close(fd)
            raise
        try:  # the holder before us may have removed the file: lock the one at `path` now
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)


def _release(path: Path, fd: int) -> None:
    """Unlock, and remove the file when no one else holds it."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        if os.stat(path).st_ino == os.fstat(fd).st_ino:
            path.unlink()
    except OSError:
        pass
    finally:
        os.close(fd)


def holder_text(path: Path) -> str:
    """'pid P on host H since T: COMMAND' from a lock file (as much as it holds)."""
    try:
        info = json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        info = {}
    if not info:
        return "a process that has not yet recorded itself"
    return (f"pid {info.get('pid')} on host {info.get('host')} since {info.get('since')}: "
            f"{info.get('command', '?')}")


class FolderLock:
    """`with FolderLock(out, "dora-data shard", part=(i, n)):` hold the folder, or raise FolderBusy."""

    def __init__(self, folder: Path, what: str, part: tuple[int, int] | None = None, hint: str = "another --out"):
        self.folder, self.what, self.hint = Path(folder), what, hint
        self.part = part if part and part[1] > 1 else None
        self.main = self.folder / ".lock"
        self.part_file = self.folder / f".lock.part-{part[0]}-of-{part[1]}" if self.part else None
        self.held: list[tuple[Path, int]] = []
        self.created: list[Path] = []

    def _busy(self, holders: list[Path]) -> FolderBusy:
        who = "; ".join(holder_text(p) for p in holders)
        return FolderBusy(f"{self.folder} is in use by {who}; wait for it to finish, or use {self.hint}")

    def _part_holders(self) -> list[Path]:
        """Part lock files held right now (a free one is stale and says nothing)."""
        held = []
        for p in sorted(self.folder.glob(".lock.part-*")):
            fd = _open_locked(p, fcntl.LOCK_SH)
            if fd is None:
                held.append(p)
            else:
                _release(p, fd)
        return held

    def _record(self, fd: int) -> None:
        info = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%dT%H:%M:%S"),
                "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])[:300]}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)

    def acquire(self) -> FolderLock:
        missing = [d for d in (self.folder, *self.folder.parents) if not d.exists()]
        self.created = missing  # folders this run makes, innermost first
        self.folder.mkdir(parents=True, exist_ok=True)
        try:
            if self.part is None:
                fd = _open_locked(self.main, fcntl.LOCK_EX)
                if fd is None:
                    raise self._busy(self._part_holders() or [self.main])
                self._record(fd)
                self.held.append((self.main, fd))
            else:
                fd = _open_locked(self.main, fcntl.LOCK_SH)
                if fd is None:
                    raise self._busy([self.main])
                self.held.append((self.main, fd))
                fd = _open_locked(self.part_file, fcntl.LOCK_EX)
                if fd is None:
                    raise self._busy([self.part_file])
                self._record(fd)
                self.held.append((self.part_file, fd))
        except FolderBusy:
            self.release()
            raise
        except OSError as e:
            self.release()
            if e.errno not in NO_LOCKS:
                raise
            print(f"warning: {self.folder}: this filesystem has no file locks ({e.strerror}); make sure no other "
                  f"{self.what} writes here at the same time", file=sys.stderr)
        return self

    def release(self) -> None:
        while self.held:
            _release(*self.held.pop())
        for folder in self.created:  # folders this run made and left empty go too
            try:
                folder.rmdir()
            except OSError:
                break

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
