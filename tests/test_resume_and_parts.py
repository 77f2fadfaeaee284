"""kill -9 and rerun gives the same bytes; --part spreads units over jobs; options stay consistent."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

from tests.conftest import MAIN_OPTS, folder_digest, run_cli, start_cli


def _start(inputs, out) -> subprocess.Popen:
    return start_cli("dora-data", "shard", *inputs, "--out", out, *MAIN_OPTS)


def _kill_when(proc: subprocess.Popen, ready, timeout: float = 120) -> bool:
    """SIGKILL `proc` as soon as ready() holds; False if it finished first."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if ready():
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.005)
    raise TimeoutError("shard did not reach the kill point")


def test_kill_9_then_rerun_gives_identical_keys_and_bytes(tmp_path, main_inputs, main_ds):
    out = tmp_path / "killed"
    units = lambda: list((out / ".work").glob("*/u*.json")) if (out / ".work").exists() else []  # noqa: E731
    # 1: killed while units are being made (one complete, others half-written)
    assert _kill_when(_start(main_inputs, out), lambda: len(units()) >= 1)
    assert not (out / "dataset.json").exists()
    done_before = len(units())
    # 2: killed again, later: as soon as assembly starts writing shards
    killed_late = _kill_when(_start(main_inputs, out), lambda: (out / "shards").exists())
    assert len(units()) >= done_before or (out / "dataset.json").exists()
    # 3: run to the end
    r = run_cli("shard", *main_inputs, "--out", out, *MAIN_OPTS)
    assert r.returncode == 0, r.stderr
    assert folder_digest(out) == folder_digest(main_ds), f"killed_late={killed_late}"
    assert not (out / ".work").exists()
    assert not list(out.rglob("*.tmp*"))


def test_rerun_of_finished_folder_skips(main_ds, main_inputs):
    before = folder_digest(main_ds)
    r = run_cli("shard", *main_inputs, "--out", main_ds, *MAIN_OPTS)
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("already in") == 4
    assert folder_digest(main_ds) == before


def test_parts_then_index_equal_one_run(tmp_path, main_inputs, main_ds):
    out = tmp_path / "parts"
    for i in range(3):
        r = run_cli("shard", *main_inputs, "--out", out, *MAIN_OPTS, "--part", f"{i}/3")
        assert r.returncode == 0, r.stderr
        assert f"part {i}/3" in r.stdout
        if i < 2:
            assert not (out / "dataset.json").exists() or json.loads((out / "dataset.json").read_text())["videos"] == []
    r = run_cli("index", out)
    assert r.returncode == 0, r.stderr
    assert folder_digest(out) == folder_digest(main_ds)


def test_index_with_missing_parts_reports_pending(tmp_path, bikes, carphone):
    out = tmp_path / "half"
    opts = ["--segment-s", "3", "--workers", "1", "--quiet", "--clip-frames", "4", "--clip-stride-s", "0.5"]
    r = run_cli("shard", bikes, carphone, "--out", out, *opts, "--part", "0/2")
    assert r.returncode == 0, r.stderr
    r = run_cli("index", out)  # round robin: each video still misses a unit, so index refuses
    assert r.returncode == 2 and "2 videos are unfinished: bikes (" in r.stderr and "rerun shard" in r.stderr
    assert not (out / "dataset.json").exists() and not (out / "shards").exists()
    r = run_cli("shard", bikes, carphone, "--out", out, *opts, "--part", "1/2")
    assert r.returncode == 0 and run_cli("index", out).returncode == 0
    meta = json.loads((out / "dataset.json").read_text())
    assert {v["name"] for v in meta["videos"]} == {"bikes", "carphone_pristine"} and meta["pending"] == []
    assert json.loads(run_cli("verify", out, "--json").stdout)["ok"]


def test_adding_a_video_later_and_option_mismatch(tmp_path, bikes, carphone):
    out = tmp_path / "grow"
    opts = ["--workers", "1", "--quiet", "--clip-frames", "4", "--clip-stride-s", "0.5"]
    assert run_cli("shard", bikes, "--out", out, *opts).returncode == 0
    first = folder_digest(out)
    r = run_cli("shard", carphone, "--out", out, *opts, "--fps", "5")
    assert r.returncode == 2 and "fps" in r.stderr and "Traceback" not in r.stderr
    assert folder_digest(out) == first
    assert run_cli("shard", carphone, "--out", out, *opts).returncode == 0
    meta = json.loads((out / "dataset.json").read_text())
    assert [v["name"] for v in meta["videos"]] == ["bikes", "carphone_pristine"]
    assert all(first[k] == h for k, h in folder_digest(out).items() if k.startswith("shards/shard-000000"))
    assert json.loads(run_cli("verify", out, "--json", "--sample", "1").stdout)["ok"]
