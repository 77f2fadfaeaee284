"""bench/shard_plan.py: the whole-dataset sharding table is plain arithmetic on the rates it is given."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

SCRIPT = ROOT / "bench" / "shard_plan.py"


def plan(*args, cwd: Path) -> subprocess.CompletedProcess:
    """Run the script as a user would, from a folder of their own."""
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, timeout=60)


def test_help_names_the_rate_options(tmp_path):
    r = plan("--help", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    for opt in ("--rate", "--rate-cores", "--gpu-rate", "--archive", "--link-gbit"):
        assert opt in r.stdout


def test_given_rates_give_the_hand_computed_rows(tmp_path):
    r = plan("--rate", 0.5, "--rate-cores", 2, "--source-s", 36000, "--videos", 1, "--segment-s", 120,
             "--cores", 64, "--nodes", 4, "--gpus", 8, "--gpu-rate", 20, "--gpu-node-cores", 64,
             "--cpu-cost", 0.3, "--mb-per-src-s", 2, "--link-gbit", 1, "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["head"]["units"] == 300  # ceil(36000 / 120 - 0.05)
    rows = {row["setup"]: row for row in out["rows"]}
    # 64 cores at 0.5 / 2 = 0.25 source-s per core-s: a 120 s unit takes 480 s; 300 units are
    # ceil(300 / 64) = 5 rounds = 2400 s (more than 36000 / (64 × 0.25) = 2250 s of perfect sharing).
    assert rows["one 64-core node"]["shard_h"] == pytest.approx(2400 / 3600)
    assert rows["one 2-core box (the measuring one)"]["shard_h"] == pytest.approx(36000 / 0.5 / 3600)
    assert rows["4 × 64-core CPU nodes"]["shard_h"] == pytest.approx(2 * 480 / 3600)
    # 8 GPUs at 20 source-s/s: 225 s; the CPU part 36000 × 0.3 / 64 = 168.75 s is hidden under it.
    gpu = rows["one node, 8 GPUs (NVDEC + CenterFace on CUDA)"]
    assert gpu["shard_h"] == pytest.approx(225 / 3600) and gpu["cpu_h"] == pytest.approx(168.75 / 3600)
    # 36000 s × 2 MB = 72 GB at 1 Gbit/s = 576 s: units go up during the run (576 s from one node, 144 s
    # each from four); then `index` on one machine pulls the 3/4 it lacks (432 s) and uploads the shards (576 s).
    node = rows["one 64-core node"]
    assert node["upload_h"] == pytest.approx(576 / 3600) and node["index_h"] == pytest.approx(576 / 3600)
    assert node["total_h"] == pytest.approx((2400 + 576) / 3600)
    four = rows["4 × 8-GPU nodes"]
    assert four["upload_h"] == pytest.approx(144 / 3600) and four["index_h"] == pytest.approx((432 + 576) / 3600)
    # 4 × 8 GPUs: 36000 / 640 = 56.25 s of sharding, under the 144 s of unit uploads
    assert four["total_h"] == pytest.approx((144 + 432 + 576) / 3600)


def test_defaults_use_the_measured_rate_and_label_every_rate(tmp_path):
    r = plan(cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith("| one 2-core box")]
    hours = 10 * 5880 / (8 * 0.51 / 9.23) / 3600  # BENCHMARKS.md: VP9 8 s, floor 9.23 s, fp32 0.51× floor
    assert len(lines) == 1 and f"| {hours:.2f} |" in lines[0] and "(measured)" in lines[0]
    assert r.stdout.count("(estimated, not measured)") == 2  # both GPU rows


def test_archive_durations_and_a_missing_archive(tmp_path):
    archive = tmp_path / "archive.jsonl"
    recs = [{"name": "a", "duration_s": 100.0}, {"name": "b", "duration_s": 245.0}, {"name": "a", "duration_s": 125.0}]
    archive.write_text("".join(json.dumps(x) + "\n" for x in recs))
    out = json.loads(plan("--archive", archive, "--segment-s", 120, "--json", cwd=tmp_path).stdout)
    # the last record of a counts (125 s: its 5 s tail, under 5 % of a unit, joins the one unit); b: 245 s, 2 units
    assert out["head"]["source_s"] == 370.0 and out["head"]["units"] == 1 + 2
    r = plan("--archive", tmp_path / "none.jsonl", cwd=tmp_path)
    assert r.returncode != 0 and r.stderr.strip().count("\n") == 0 and r.stderr.startswith("error: ")
