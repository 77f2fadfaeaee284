"""Which part of the work units a `shard` process makes: `--part i/n`, or `--part auto` read
from the scheduler's environment (SLURM arrays, srun tasks, torchrun processes).

Every function here takes the environment as a mapping, so the rules are tested without starting
processes. `--part auto` looks, in this order, at:

  1. SLURM_ARRAY_TASK_ID with SLURM_ARRAY_TASK_COUNT, or SLURM_ARRAY_TASK_MIN/MAX (`sbatch --array=0-15`);
  2. SLURM_PROCID / SLURM_NTASKS (`srun -N 4 --ntasks-per-node 8`);
  3. RANK / WORLD_SIZE (`torchrun --nproc-per-node 8`).

An array task that starts several processes (srun tasks or torchrun inside the array script) composes the
two: part = array part x processes + process, of array tasks x processes.

One exception to the order: torchrun started by srun (or inside a batch script) inherits SLURM_PROCID /
SLURM_NTASKS, which then count the torchrun launchers, not its processes; where RANK / WORLD_SIZE say
otherwise, they are the ones that name this process.

The part's run and its log are in `runlog.py`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from pipeline.errors import InputError

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
    slurm, torch = _pair(env, PROCID), _pair(env, RANK)
    if slurm is not None and torch is not None and torch.pair != slurm.pair:
        part = Part(torch.index, torch.count, f"RANK/WORLD_SIZE (inside SLURM task {slurm.index}/{slurm.count})")
    else:
        part = slurm or torch
    if _int(env, ARRAY[0]) is not None:  # an array task that runs several processes: each gets its own part
        outer = _array_part(env)
        if part is None or part.count == 1:
            return outer
        return Part(outer.index * part.count + part.index, outer.count * part.count, f"{outer.source} x {part.source}")
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
