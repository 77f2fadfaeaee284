"""A `shard` part's run: what it says at the start and end, and its log.

Each part appends to its own log, DIR/logs/shard-part-I-of-N.log (a whole run: DIR/logs/shard.log):
a header per run, the start line, one line per finished unit, errors and the end summary. Every line is
one `write` to a file opened for appending, so lines of concurrent writers never interleave.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.errors import UserFacingError, disk_full_cause, os_error_line
from pipeline.shard.parts import LOGS, Part, default_workers, local_world_size, resolve_part
from pipeline.store import redact
from pipeline.workers import usable_cores

if TYPE_CHECKING:  # run.py imports this module's package
    from pipeline.shard.run import ShardReport
    from pipeline.shard.units import Unit


def log_path(out: Path, part: Part | None) -> Path:
    """DIR/logs/shard-part-I-of-N.log for a part, DIR/logs/shard.log for a whole run."""
    name = f"shard-part-{part.index}-of-{part.count}.log" if part and part.count > 1 else "shard.log"
    return Path(out) / LOGS / name


def _stamp() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S")


def error_text(e: BaseException) -> str:
    """The one line a failure shows (as the command line prints it)."""
    if isinstance(e, KeyboardInterrupt):
        return "interrupted"
    if isinstance(e, UserFacingError):
        return str(e)
    return os_error_line(e) or f"{type(e).__name__}: {e}"


@dataclass
class PartRun:
    """One `shard` process: its part, its workers, and its log (opened once the run holds the folder)."""

    out: Path
    part: Part | None
    workers: int
    sharing: int = 1  # processes of this job on this node (the workers default divides the cores by it)
    echo: Callable[[str], None] = print
    fd: int | None = field(default=None, repr=False)
    broken: bool = False  # a log write failed: the run goes on without its log

    @classmethod
    def make(cls, out: Path, option: str | None, workers: int | None, env: Mapping[str, str],
             echo: Callable[[str], None] = print) -> PartRun:
        """From the --part and --workers options and the environment (InputError on a bad part)."""
        part = resolve_part(option, env)
        n = default_workers(workers, part, env, usable_cores())
        sharing = 1 if workers or part is None or part.count < 2 else local_world_size(env)
        return cls(Path(out), part, n, sharing, echo)

    @property
    def pair(self) -> tuple[int, int] | None:
        return self.part.pair if self.part else None

    @property
    def log(self) -> Path:
        return log_path(self.out, self.part)

    def write(self, text: str) -> None:
        """Append `text` (one or more lines) to the log in one write; after a failed write, nothing more."""
        if self.fd is None or self.broken:
            return
        try:
            os.write(self.fd, "".join(f"{_stamp()} {line}\n" for line in text.splitlines()).encode())
        except OSError:
            self.broken = True

    def start(self, mine: int, total: int, done: int) -> None:
        """The run holds the folder and knows its units: open the log, say which part this is (stdout and log)."""
        command = " ".join(redact(a) for a in [Path(sys.argv[0]).name, *sys.argv[1:]])  # no credentials in URLs
        try:
            self.log.parent.mkdir(exist_ok=True)
            self.fd = os.open(self.log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            os.write(self.fd, f"=== {_stamp()} pid {os.getpid()} on {socket.gethostname()}: {command}\n".encode())
        except OSError as e:
            if disk_full_cause(e):  # before any work: one line, as for any other write
                raise
            self.broken = True  # e.g. a file named logs in the way: the work goes on without its log
            print(f"warning: {self.log}: cannot write the run's log ({e.strerror}); going on without it",
                  file=sys.stderr)
        who = "whole run" if self.part is None else str(self.part) + (" (the whole run)" if self.part.count < 2 else "")
        units = (f"{mine} of " if mine != total else "") + f"{total} work unit{'s' if total != 1 else ''}"
        workers = f"{self.workers} worker{'s' if self.workers > 1 else ''}"
        if self.sharing > 1:
            workers += f" (the cores shared by {self.sharing} processes on this node)"
        line = f"{who}: {units}{f' ({done} already complete)' if done else ''}, {workers}"
        self.echo(line)
        self.write(line)

    def unit(self, unit: Unit, seconds: float) -> None:
        """One finished work unit (its name, video and seconds)."""
        self.write(f"unit {unit.name} of {unit.video} done in {seconds:.2f} s")

    def end(self, report: ShardReport, target: str | Path | None = None) -> str | None:
        """Log the summary of a finished run; the closing line of a part, which names `dora-data index TARGET`
        (default: the folder), or None for a whole run."""
        for msg in report.failed.values():
            self.write(f"error: {msg}")
        line = f"{report.units_done}/{report.units_total} units complete"
        if self.part is not None and self.part.count > 1:
            line = (f"part {self.part.index}/{self.part.count}: {line}; when every part has finished, run "
                    f"`dora-data index {target or self.out}`")
        elif report.index is not None:
            index = report.index
            line += (f"; dataset.json: {len(index['videos'])} videos, "
                     f"{sum(v['n_frames'] for v in index['videos'])} frames, {len(index['shards'])} shards")
        self.write(f"end: {line}")
        return line if self.part is not None and self.part.count > 1 else None

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    @contextlib.contextmanager
    def logged(self) -> Iterator[PartRun]:
        """`with run.logged():` a failure after the start is logged (as its one line) before it goes on up."""
        try:
            yield self
        except BaseException as e:
            self.write(f"error: {error_text(e)}")
            raise
        finally:
            self.close()
