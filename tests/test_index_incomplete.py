"""A shard folder with an unfinished video (a killed or partial `shard`): `verify` says to rerun shard,
`index` refuses unless `--drop-incomplete` (which lists what it drops), and a damaged dataset.json
does not send the user to a command that fails the same way."""

from __future__ import annotations

import json
import os
import signal
import time

from tests.conftest import run_cli, start_cli

FAST = ["--workers", "1", "--quiet", "--short-side", "64", "--clip-frames", "4", "--clip-stride-s", "0.5"]


def one_line(r) -> str:
    """The single stderr line of a refused command (exit 2, no traceback)."""
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    return lines[0]


def test_kill_9_then_verify_and_index_say_rerun_shard_which_finishes_it(tmp_path, bikes, carphone):
    out = tmp_path / "killed"
    proc = start_cli("dora-data", "shard", bikes, carphone, "--out", out, "--segment-s", "3", *FAST)
    deadline = time.time() + 120
    while not list(out.glob(".work/*/u*.json")):  # one unit done: the others are not
        assert proc.poll() is None and time.time() < deadline, "shard finished before the kill"
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / "dataset.json").exists()
    said = one_line(run_cli("verify", out))
    assert "unfinished" in said and "rerun `dora-data shard` with the same inputs and options" in said
    assert "dora-data index" not in said
    said = one_line(run_cli("index", out))
    assert "unfinished" in said and "rerun shard" in said and "--drop-incomplete" in said and str(bikes) in said
    assert not (out / "dataset.json").exists()  # nothing partial that verify would pass
    r = run_cli("shard", bikes, carphone, "--out", out, "--segment-s", "3", *FAST)  # the advice, followed
    assert r.returncode == 0, r.stderr
    report = json.loads(run_cli("verify", out, "--json").stdout)
    assert report["ok"] and report["videos"] == 2 and report["warnings"] == []


def test_index_refuses_then_drop_incomplete_lists_and_records_what_it_drops(tmp_path, bikes, carphone, bbb):
    out = tmp_path / "half"
    # one unit per video, round robin: part 0/2 makes bikes, carphone is left with 0 of 1 units
    r = run_cli("shard", bikes, carphone, "--out", out, "--segment-s", "120", *FAST, "--part", "0/2")
    assert r.returncode == 0, r.stderr
    said = one_line(run_cli("index", out))
    assert "1 video is unfinished: carphone_pristine (0 of 1 units)" in said and "rerun shard" in said
    assert not (out / "dataset.json").exists()
    said = one_line(run_cli("shard", bikes, bbb, "--out", out, "--segment-s", "120", *FAST))  # the same rule,
    assert "carphone_pristine (0 of 1 units)" in said and not (out / "dataset.json").exists()
    assert not list(out.glob(".work/bigbuckbunny/u*"))  # said before decoding the new video, not after
    r = run_cli("index", out, "--drop-incomplete", "--quiet")
    assert r.returncode == 0, r.stderr
    assert f"dropped carphone_pristine (0 of 1 units, from {carphone.resolve()})" in r.stdout
    meta = json.loads((out / "dataset.json").read_text())
    assert [v["name"] for v in meta["videos"]] == ["bikes"]
    assert [d["name"] for d in meta["dropped"]] == ["carphone_pristine"]
    assert not (out / ".work").exists()
    r = run_cli("verify", out)
    assert r.returncode == 0 and r.stdout.startswith("OK")
    assert "warning: carphone_pristine: not in this dataset: dropped by `dora-data index --drop-incomplete`" \
        in r.stderr
    assert run_cli("shard", carphone, "--out", out, "--segment-s", "120", *FAST).returncode == 0  # back in:
    assert "dropped" not in json.loads((out / "dataset.json").read_text()) or not json.loads(
        (out / "dataset.json").read_text())["dropped"]  # no longer listed as dropped
    assert "not in this dataset" not in run_cli("verify", out).stderr


def test_drop_incomplete_with_nothing_complete_is_refused(tmp_path, bikes):
    out = tmp_path / "none"
    r = run_cli("shard", bikes, "--out", out, "--segment-s", "120", *FAST, "--part", "1/2")  # no unit of its own
    assert r.returncode == 0, r.stderr
    said = one_line(run_cli("index", out, "--drop-incomplete"))
    assert "no video is complete" in said and "rerun shard" in said
    assert (out / ".work" / "bikes" / "video.json").exists()  # nothing deleted


def test_a_damaged_dataset_json_does_not_point_to_index(tmp_path, bikes):
    out = tmp_path / "done"
    assert run_cli("shard", bikes, "--out", out, "--segment-s", "120", *FAST).returncode == 0
    (out / "dataset.json").write_text('{"videos": [')
    for command in (("verify", out), ("index", out), ("clips", out)):
        said = one_line(run_cli(*command))
        assert "dataset.json: not valid JSON" in said and "dora-data index" not in said, said
        assert f"run `dora-data shard` again with the same inputs and options (--out {out})" in said
