"""One worker pool for the stages that run many independent tasks (`shard`'s units, `analyze`'s inputs).

Tasks run in spawned processes that die with their parent (or inline with one worker or one task).
Each task gets a `progress(message)` callable whose messages reach `on_progress` in the parent
(feeding tqdm bars). A task that fails with a `UserFacingError` is handed to the error policy, a
value in webdataset's `handler=` style: `reraise` stops the run at the first failure,
`SkipAndRecord()` records one line per key and goes on. Tasks share a key (a video's units) so that
a failed key's other tasks are cancelled or skipped. Any other exception is a bug and stops the run.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import queue
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from multiprocessing.managers import SyncManager
from typing import Any, Protocol

from pipeline.errors import UserFacingError

PR_SET_PDEATHSIG = 1  # linux/prctl.h
WATCHDOG_S = 0.5  # how often a worker checks that its parent is alive


class ErrorPolicy(Protocol):
    def __call__(self, key: str, error: UserFacingError) -> None:
        """Raise to stop the run; return to skip the failed key and go on."""


def reraise(key: str, error: UserFacingError) -> None:
    """Stop at the first failure (the default)."""
    raise error


@dataclass
class SkipAndRecord:
    """Go on past failures (`--keep-going`); `failed` holds the first error line of each failed key."""

    failed: dict[str, str] = field(default_factory=dict)

    def __call__(self, key: str, error: UserFacingError) -> None:
        self.failed.setdefault(key, str(error))


def failures(policy: ErrorPolicy) -> dict[str, str]:
    """The failures a policy recorded (none for `reraise`)."""
    return dict(getattr(policy, "failed", {}))


@dataclass(frozen=True)
class Task:
    """`fn(*args, progress=...)` run in a worker; `key` groups tasks that fail together."""

    key: str
    fn: Callable[..., Any]
    args: tuple = ()


@dataclass
class PoolResult:
    results: dict[int, Any]  # task index -> return value, for the tasks that finished
    failed: set[str]  # keys whose tasks failed in this run


def usable_cores() -> int:
    """The cores this process may run on (a Slurm task's --cpus-per-task, not the whole node)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _die_with_parent(parent: int | None = None) -> None:
    """Worker initialiser: a worker (or the manager process) must not outlive its killed parent.

    On Linux the kernel sends SIGKILL when the parent dies (PR_SET_PDEATHSIG); a parent killed while
    the worker was still starting (before this call) is caught by comparing the parent's pid, and a
    watchdog thread polls it too where prctl is missing. With every child gone, multiprocessing's
    resource tracker reads end-of-file on its pipe and exits as well.
    """
    parent = os.getppid() if parent is None else parent
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):  # not Linux: the watchdog below does it
        pass
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)

    def watchdog() -> None:
        while os.getppid() == parent:
            time.sleep(WATCHDOG_S)
        os._exit(1)

    threading.Thread(target=watchdog, name="parent-watchdog", daemon=True).start()


def _manager(ctx) -> SyncManager:
    """A started SyncManager (its server process carries the progress queue) that dies with this process."""
    manager = SyncManager(ctx=ctx)
    manager.start(_die_with_parent, (os.getpid(),))
    return manager


def _call(task: Task, messages) -> Any:
    return task.fn(*task.args, progress=messages.put)


def run_tasks(tasks: list[Task], workers: int, on_error: ErrorPolicy = reraise,
              on_progress: Callable[[Any], None] = lambda message: None) -> PoolResult:
    """Run `tasks` on up to `workers` processes; failures go to `on_error` (see the module docstring)."""
    out = PoolResult({}, set())

    def failed(i: int, e: UserFacingError) -> None:
        out.failed.add(tasks[i].key)
        on_error(tasks[i].key, e)

    if workers <= 1 or len(tasks) <= 1:
        for i, task in enumerate(tasks):
            if task.key in out.failed:
                continue
            try:
                out.results[i] = task.fn(*task.args, progress=on_progress)
            except UserFacingError as e:
                failed(i, e)
        return out
    ctx = mp.get_context("spawn")
    with _manager(ctx) as manager:
        messages = manager.Queue()
        stop = threading.Event()

        def pump() -> None:
            while not stop.is_set():
                with contextlib.suppress(queue.Empty):
                    on_progress(messages.get(timeout=0.2))

        pumper = threading.Thread(target=pump, daemon=True)
        pumper.start()
        pool = ProcessPoolExecutor(min(workers, len(tasks)), mp_context=ctx, initializer=_die_with_parent,
                                   initargs=(os.getpid(),))
        running: dict[Future, int] = {}
        try:
            running = {pool.submit(_call, task, messages): i for i, task in enumerate(tasks)}
            while running:
                finished, _ = wait(running, return_when=FIRST_COMPLETED)
                for fut in finished:
                    i = running.pop(fut)
                    err = fut.exception()
                    if err is None:
                        out.results[i] = fut.result()
                    elif isinstance(err, UserFacingError):
                        for other, j in list(running.items()):  # the key's other tasks are not worth running
                            if tasks[j].key == tasks[i].key and other.cancel():
                                running.pop(other)
                        if tasks[i].key not in out.failed:
                            failed(i, err)
                    else:
                        raise err
        finally:
            for fut in running:
                fut.cancel()
            pool.shutdown(wait=True, cancel_futures=True)
            stop.set()
            pumper.join()
            while not messages.empty():  # the last messages of the last tasks
                on_progress(messages.get())
    return out
