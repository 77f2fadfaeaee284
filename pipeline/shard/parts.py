"""Which part of the work units a `shard` process makes, and its log: `--part i/n`, or `--part auto` read
from the scheduler's environment (SLURM arrays, srun tasks, torchrun processes).

Every function here takes the environment as a mapping, so the rules are tested without starting
processes. `--part auto` looks, in this order, at:

  1. SLURM_ARRAY_TASK_ID with SLURM_ARRAY_TASK_COUNT, or SLURM_ARRAY_TASK_MIN/MAX (`sbatch --array=0-15`);
  2. SLURM_PROCID / SLURM_NTASKS (`srun -N 4 --ntasks-per-node 8`);
  3. RANK / WORLD_SIZE (`torchrun --nproc-per-node 8`).

One exception to the order: torchrun started by srun (or inside a batch script) inherits SLURM_PROCID /
SLURM_NTASKS, which then count the torchrun launchers, not its processes; where RANK / WORLD_SIZE say
otherwise, they are the ones that name this process.

Each part appends to its own log, DIR/logs/shard-part-I-of-N.log (a whole run: DIR/logs/shard.log):
a header per run, the start line, one line per finished unit, errors and the end summary. Every line is
one `write` to a file opened for appending, so lines of concurrent writers never interleave.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.errors import InputError, UserFacingError, disk_full_cause, os_error_line

if TYPE_CHECKING:  # units.py re-exports parse_part from here; run.py imports units.py
    from pipeline.shard.run import ShardReport
    from pipeline.shard.units import Unit

ARRAY, PROCID, RANK = ("SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_COUNT"), ("SLURM_PROCID", "SLURM_NTASKS"), \
    ("RANK", "WORLD_SIZE")
LOOKED_FOR = "SLURM_ARRAY_TASK_ID/SLURM_ARRAY_TASK_COUNT (or _MIN/_MAX), SLURM_PROCID/SLURM_NTASKS, RANK/WORLD_SIZE"
LOGS = "logs"  # DIR/logs/: not part of the dataset (docs/FORMAT.md)


@dataclass(frozen=True)
class Part:
    """Part `index` of `count` (0 <= index < count), and where it came from (`--part`, or variable names)."""

    index: int
    count: int
    source: str = "--part"

    @property
    def pair(self) -> tuple[int, int]:
        return self.index, self.count

    def __str__(self) -> str:
        return f"part {self.index}/{self.count} from {self.source}"


def parse_part(text: str) -> tuple[int, int]:
    """'i/n' -> (i, n), 0 <= i < n."""
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text or "")
    if not m or int(m.group(2)) < 1 or int(m.group(1)) >= int(m.group(2)):
        raise ValueError(f"--part {text!r}: expected i/n with 0 <= i < n, e.g. --part 0/4, or --part auto")
    return int(m.group(1)), int(m.group(2))


def _int(env: Mapping[str, str], name: str) -> int | None:
    """The whole number in env[name], None when it is unset or empty."""
    text = env.get(name, "").strip()
    if not text:
        return None
    if not re.fullmatch(r"-?\d+", text):
        raise InputError(f"--part auto: {name}={text!r} is not a whole number; give --part i/n instead")
    return int(text)


def _checked(i: int, n: int, source: str) -> Part:
    if n < 1 or not 0 <= i < n:
        raise InputError(f"--part auto: {source} give part {i} of {n}, not one of 0..{n - 1}; give --part i/n")
    return Part(i, n, source)


def _array_part(env: Mapping[str, str]) -> Part:
    """A SLURM array task's part: i = ID - MIN, n = COUNT (or MAX - MIN + 1)."""
    tid, count = _int(env, "SLURM_ARRAY_TASK_ID"), _int(env, "SLURM_ARRAY_TASK_COUNT")
    lo, hi, step = (_int(env, f"SLURM_ARRAY_TASK_{k}") for k in ("MIN", "MAX", "STEP"))
    if step is not None and step != 1:
        raise InputError(f"--part auto: the SLURM array has a step (SLURM_ARRAY_TASK_STEP={step}), so its task ids "
                         "are not parts 0..n-1; use --array=0-N (no :step), or give --part i/n")
    if lo is not None and hi is not None:
        if not lo <= tid <= hi:
            raise InputError(f"--part auto: SLURM_ARRAY_TASK_ID={tid} is outside SLURM_ARRAY_TASK_MIN..MAX "
                             f"({lo}..{hi}); give --part i/n")
        if count is not None and count != hi - lo + 1:
            raise InputError(f"--part auto: the SLURM array {lo}..{hi} has {count} tasks, not {hi - lo + 1} (a list "
                             "with gaps); use --array=0-N, or give --part i/n")
        source = ("SLURM_ARRAY_TASK_ID/SLURM_ARRAY_TASK_COUNT" if count is not None
                  else "SLURM_ARRAY_TASK_ID/SLURM_ARRAY_TASK_MIN..MAX")
        return _checked(tid - lo, hi - lo + 1, source + (f" (minus SLURM_ARRAY_TASK_MIN={lo})" if lo else ""))
    if count is None:
        raise InputError("--part auto: SLURM_ARRAY_TASK_ID is set but neither SLURM_ARRAY_TASK_COUNT nor "
                         "SLURM_ARRAY_TASK_MIN/MAX; give --part i/n")
    return _checked(tid, count, "SLURM_ARRAY_TASK_ID/SLURM_ARRAY_TASK_COUNT")


def _pair(env: Mapping[str, str], names: tuple[str, str]) -> Part | None:
    """The part (rank, size) from a pair of variables, None unless both are set."""
    i, n = (_int(env, name) for name in names)
    return None if i is None or n is None else _checked(i, n, "/".join(names))


def part_from_env(env: Mapping[str, str]) -> Part:
    """This process's part from the scheduler's variables (the order is in the module docstring); an
    InputError, one line naming the variables looked for, when none are set."""
    if _int(env, ARRAY[0]) is not None:
        return _array_part(env)
    slurm, torch = _pair(env, PROCID), _pair(env, RANK)
    if slurm is not None and torch is not None and torch.pair != slurm.pair:
        return Part(torch.index, torch.count, f"RANK/WORLD_SIZE (inside SLURM task {slurm.index}/{slurm.count})")
    part = slurm or torch
    if part is None:
        raise InputError(f"--part auto: no part in the environment (looked for {LOOKED_FOR}); run it under "
                         "sbatch --array, srun or torchrun, or give --part i/n")
    return part


def resolve_part(option: str | None, env: Mapping[str, str]) -> Part | None:
    """The part a `--part` value names: None (whole run), 'i/n', or 'auto' (from `env`)."""
    if option is None:
        return None
    if option.strip().lower() == "auto":
        return part_from_env(env)
    try:
        return Part(*parse_part(option))
    except ValueError as e:
        raise InputError(str(e)) from None


def _tasks_per_node(text: str, node: int) -> int | None:
    """SLURM_TASKS_PER_NODE ('8(x4)' or '2(x3),1') on node `node` (0-based), None when unreadable."""
    counts: list[int] = []
    for item in text.split(","):
        m = re.fullmatch(r"\s*(\d+)(?:\(x(\d+)\))?\s*", item)
        if not m:
            return None
        counts += [int(m.group(1))] * int(m.group(2) or 1)
    return counts[node] if 0 <= node < len(counts) else None


def local_rank(env: Mapping[str, str]) -> int:
    """This process's index among the processes of its job on this node (its CUDA device): LOCAL_RANK
    (torchrun), else SLURM_LOCALID (srun), else 0."""
    for name in ("LOCAL_RANK", "SLURM_LOCALID"):
        value = _int(env, name)
        if value is not None:
            return value
    return 0


def local_world_size(env: Mapping[str, str]) -> int:
    """How many processes of this job run on this node: LOCAL_WORLD_SIZE (torchrun), else
    SLURM_NTASKS_PER_NODE or SLURM_TASKS_PER_NODE at SLURM_NODEID (srun), else 1."""
    for name in ("LOCAL_WORLD_SIZE", "SLURM_NTASKS_PER_NODE"):
        value = _int(env, name)
        if value is not None:
            return max(1, value)
    if env.get("SLURM_TASKS_PER_NODE"):
        n = _tasks_per_node(env["SLURM_TASKS_PER_NODE"], _int(env, "SLURM_NODEID") or 0)
        if n is not None:
            return max(1, n)
    return 1


def default_workers(workers: int | None, part: Part | None, env: Mapping[str, str], cores: int) -> int:
    """--workers, or by default the cores, shared among the parts on this node (8 torchrun processes on a
    64-core node get 8 workers each, not 64)."""
    if workers:
        return workers
    sharing = local_world_size(env) if part is not None and part.count > 1 else 1
    return max(1, cores // sharing)


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
        n = default_workers(workers, part, env, os.cpu_count() or 1)
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
        command = " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])
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
