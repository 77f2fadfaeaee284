"""The one worker pool: tasks in real spawned processes (or inline), progress messages, and the error
policy as a value: `reraise` stops at the first failure, `SkipAndRecord` records it and goes on."""

from __future__ import annotations

import os
import time

import pytest

from pipeline.errors import InputError
from pipeline.workers import SkipAndRecord, Task, failures, reraise, run_tasks


def square(x: int, progress) -> tuple[int, int]:
    progress(1)
    return x * x, os.getpid()


def fail_on(x: int, bad: int, progress) -> int:
    if x == bad:
        raise InputError(f"input {x}: unusable")
    time.sleep(0.05)
    progress(1)
    return x


def crash(progress) -> None:
    raise ZeroDivisionError("a bug, not an input")


@pytest.mark.parametrize("workers", [1, 2])
def test_results_and_progress_come_back_for_every_task(workers):
    seen = []
    done = run_tasks([Task(f"k{i}", square, (i,)) for i in range(4)], workers, on_progress=seen.append)
    assert {i: r[0] for i, r in done.results.items()} == {0: 0, 1: 1, 2: 4, 3: 9} and done.failed == set()
    assert sum(seen) == 4
    pids = {r[1] for r in done.results.values()}
    assert (pids == {os.getpid()}) if workers == 1 else (os.getpid() not in pids)  # inline vs spawned workers


@pytest.mark.parametrize("workers", [1, 2])
def test_reraise_stops_at_the_first_failure(workers):
    tasks = [Task(f"k{i}", fail_on, (i, 1)) for i in range(4)]
    with pytest.raises(InputError, match="input 1: unusable"):
        run_tasks(tasks, workers, reraise)


@pytest.mark.parametrize("workers", [1, 2])
def test_skip_and_record_goes_on_and_skips_the_failed_keys_other_tasks(workers):
    policy = SkipAndRecord()
    # keys: a video with three units (the second fails), and another video
    tasks = [Task("a", fail_on, (0, 1)), Task("a", fail_on, (1, 1)), Task("b", fail_on, (2, 1))]
    if workers == 1:
        tasks.append(Task("a", fail_on, (3, 1)))  # inline: after the failure, key a's later task never runs
    done = run_tasks(tasks, workers, policy)
    assert failures(policy) == {"a": "input 1: unusable"} and done.failed == {"a"}
    assert 2 in done.results and 1 not in done.results
    if workers == 1:
        assert 3 not in done.results


def test_a_bug_is_not_swallowed_by_skip_and_record():
    with pytest.raises(ZeroDivisionError):
        run_tasks([Task("a", crash), Task("b", crash)], 2, SkipAndRecord())


def test_reraise_records_nothing():
    assert failures(reraise) == {}
