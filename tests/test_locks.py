"""Faults a long job meets: a second run on the same folder (shard, train), a kill -9'd lock holder, a full disk
while a checkpoint is written."""

from __future__ import annotations

import json
import os
import resource
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import MAIN_OPTS, ROOT, cli_env, run_cli, run_entry, start_cli

SMOKE = ROOT / "configs" / "smoke.yaml"
HOST = socket.gethostname()
TINY = ["--workers", "1", "--quiet", "--fps", "4", "--clip-frames", "4", "--clip-stride-s", "0.5", "--segment-s", "3"]


def _wait(cond, proc: subprocess.Popen, what: str, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while not cond():
        assert proc.poll() is None, f"finished before {what}"
        assert time.time() < deadline, f"no {what} after {timeout} s"
        time.sleep(0.02)


def _kill(proc: subprocess.Popen) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()


def _one_error_line(r: subprocess.CompletedProcess) -> str:
    """The run's single `error:` line; other stderr lines may only be dora-train's own progress lines."""
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    lines = r.stderr.strip().splitlines()
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], r.stderr
    assert all(line.startswith("dora-train: ") for line in lines[:-1]), r.stderr
    return errors[0]


def _holder(folder: Path, part: tuple[int, int] | None = None) -> subprocess.Popen:
    """Another process that takes the folder's lock (as `shard --part i/n` would) and keeps it."""
    code = ("import sys, time; from pipeline.files.lock import FolderLock; "
            f"FolderLock(sys.argv[1], 'holder', {part!r}).acquire(); print('ready', flush=True); time.sleep(600)")
    proc = subprocess.Popen([sys.executable, "-c", code, str(folder)], stdout=subprocess.PIPE, text=True,
                            env=cli_env())
    assert proc.stdout.readline().strip() == "ready"
    return proc


def test_second_shard_on_the_same_folder_is_refused_and_a_killed_holder_does_not_block(tmp_path, main_inputs):
    out = tmp_path / "wt"
    first = start_cli("dora-data", "shard", *main_inputs, "--out", out, *MAIN_OPTS)
    try:
        _wait(lambda: (out / ".lock").exists() and (out / ".work").exists(), first, "a lock")
        r = run_cli("shard", main_inputs[1], "--out", out, *MAIN_OPTS)
        line = _one_error_line(r)
        assert f"{out} is in use by pid {first.pid} on host {HOST}" in line and "dora-data shard" in line
        assert "wait for it to finish, or use another --out" in line
    finally:
        _kill(first)  # kill -9: its lock file stays behind, but the kernel has released the lock
    assert (out / ".lock").exists()
    r = run_cli("index", out)  # it takes the lock (then refuses the unfinished videos: rerun shard)
    assert "in use" not in r.stderr and "unfinished" in r.stderr, r.stderr
    assert not (out / ".lock").exists()


def test_parts_run_side_by_side_but_not_twice_and_not_with_a_whole_run(tmp_path, bikes, carphone):
    out = tmp_path / "parts"
    holder = _holder(out, (0, 2))
    try:
        r = run_cli("shard", bikes, carphone, "--out", out, *TINY, "--part", "1/2")
        assert r.returncode == 0, r.stderr  # another part at the same time: fine
        for args in (["--part", "0/2"], []):
            line = _one_error_line(run_cli("shard", bikes, carphone, "--out", out, *TINY, *args))
            assert f"in use by pid {holder.pid} on host {HOST}" in line
        line = _one_error_line(run_cli("index", out))
        assert f"pid {holder.pid}" in line
    finally:
        _kill(holder)
    r = run_cli("shard", bikes, carphone, "--out", out, *TINY, "--part", "0/2")
    assert r.returncode == 0, r.stderr
    assert run_cli("index", out).returncode == 0
    assert json.loads(run_cli("verify", out, "--json").stdout)["ok"]
    assert not list(out.glob(".lock*"))


@pytest.fixture(scope="module")
def tiny_ds(tmp_path_factory, carphone) -> Path:
    out = tmp_path_factory.mktemp("locks") / "tiny"
    r = run_cli("shard", carphone, "--out", out, *TINY)
    assert r.returncode == 0, r.stderr
    return out


def test_second_train_on_the_same_output_is_refused(tiny_ds, tmp_path):
    run = tmp_path / "run"
    args = ["--shards", tiny_ds, "--config", SMOKE, "--output", run, "--quiet", "train.checkpoint_every=1"]
    first = start_cli("dora-train", *args, "train.epochs=50")
    try:
        _wait(lambda: (run / "metrics.jsonl").exists(), first, "a training step")
        line = _one_error_line(run_entry("dora-train", *args, "train.epochs=50"))
        assert f"{run} is in use by pid {first.pid} on host {HOST}" in line and "another --output" in line
    finally:
        _kill(first)
    r = run_entry("dora-train", *args, "train.epochs=0.1")  # the killed run's lock does not block
    assert r.returncode == 0, r.stderr
    assert not (run / ".lock").exists()


@pytest.mark.parametrize("how", ["tmpfs", "file size limit"])
def test_full_disk_while_writing_a_checkpoint(tiny_ds, tmp_path, how):
    """The run folder fills up between two checkpoints: a real tmpfs filled to the brim (where mounting is
    allowed) or a file size limit below the checkpoint's size; both fail the write as a full disk does."""
    small = tmp_path / "small"
    small.mkdir()
    mounted = how == "tmpfs" and subprocess.run(["mount", "-t", "tmpfs", "-o", "size=96m", "tmpfs", str(small)],
                                                capture_output=True).returncode == 0
    try:
        run = small / "run"
        args = ["--shards", tiny_ds, "--config", SMOKE, "--output", run, "--quiet", "train.checkpoint_every=2"]
        r = run_entry("dora-train", *args, "train.epochs=0.5")
        assert r.returncode == 0, r.stderr
        before = sorted(p.name for p in (run / "checkpoints").iterdir())
        size = (run / "checkpoints" / before[-1]).stat().st_size
        if mounted:  # leave 256 kB: enough for logs, not for a checkpoint
            free = os.statvfs(small).f_bavail * os.statvfs(small).f_frsize
            (small / "filler").write_bytes(bytes(max(0, free - 256_000)))

        def limit_file_size():
            if not mounted:
                signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
                resource.setrlimit(resource.RLIMIT_FSIZE, (size // 2, size // 2))

        r = run_entry("dora-train", *args, "train.epochs=1.5", preexec_fn=limit_file_size)
        line = _one_error_line(r)
        assert f"{run / 'checkpoints'}: disk full while writing the step" in line
        assert f"it needs about {size / 1e6:.0f} MB" in line
        assert f"the last good checkpoint {run / 'checkpoints' / before[-1]} is still there" in line
        assert "rerunning the same command resumes from it" in line
        assert sorted(p.name for p in (run / "checkpoints").iterdir()) == before  # nothing partial
        if mounted:  # space freed: the same command resumes from the kept checkpoint and finishes
            (small / "filler").unlink()
            r = run_entry("dora-train", *args, "train.epochs=1.5")
            assert r.returncode == 0, r.stderr
            assert json.loads(r.stdout.strip().splitlines()[-1])["steps"] > int(before[-1][5:13])
    finally:
        if mounted:
            subprocess.run(["umount", str(small)], check=True)
