"""`kill -9` of `shard` or `analyze` leaves no process behind: its workers, the multiprocessing manager
and the resource tracker all go with it (pipeline/workers.py)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from tests.conftest import MAIN_OPTS, start_cli


def session_processes(sid: int) -> dict[int, str]:
    """Live (not zombie) processes of session `sid`: pid -> command line."""
    found = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # gone meanwhile
            continue
        state, _ppid, _pgrp, session = stat[stat.rindex(")") + 2:].split()[:4]
        if int(session) == sid and state != "Z":
            found[int(d.name)] = cmd.strip()
    return found


def wait_for(cond, timeout: float, step: float = 0.05):
    """Poll cond() until it returns something true (returned) or `timeout` s pass (None)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        got = cond()
        if got:
            return got
        time.sleep(step)
    return None


@pytest.mark.parametrize("command", ["shard", "analyze"])
def test_kill_9_mid_run_leaves_no_process_of_its_tree(tmp_path, main_inputs, command):
    if command == "shard":
        args = ["shard", *main_inputs, "--out", tmp_path / "out", *MAIN_OPTS]  # --workers 2
    else:
        args = ["analyze", *main_inputs, "--out", tmp_path / "analysis", "--workers", "2", "--quiet"]
    proc = start_cli("dora-data", *args, start_new_session=True)  # its session id is its pid
    sid = proc.pid
    try:
        def running() -> dict | None:
            procs = session_processes(sid)
            spawned = [c for c in procs.values() if "spawn_main" in c]
            tracker = [c for c in procs.values() if "resource_tracker" in c]
            assert proc.poll() is None, f"dora-data {command} finished before its workers started"
            return procs if len(spawned) >= 2 and tracker else None

        before = wait_for(running, timeout=120)
        assert before, f"dora-data {command} started no worker processes"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        left = wait_for(lambda: not session_processes(sid), timeout=30) or session_processes(sid)
        assert left is True, f"left behind after kill -9 of dora-data {command}: {left} (tree was {before})"
    finally:
        proc.kill() if proc.poll() is None else None
        for pid in session_processes(sid):
            os.kill(pid, signal.SIGKILL)
