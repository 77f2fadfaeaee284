"""Checkpoints a researcher needs: the step-0 checkpoint (train.epochs=0), milestone checkpoints
(train.keep_checkpoints, train.keep_every), and the online k-NN curve starting at step 0."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from dora.checkpoint import kept, prune
from dora.config import ConfigError, load_config
from dora.train.schedules import total_steps
from tests.conftest import run_entry
from tests.imagefolders import make_folder
from tests.test_train import SMOKE, train_cli


def _names(run: Path) -> list[str]:
    return sorted(p.name for p in (run / "checkpoints").iterdir())


def test_total_steps_zero_epochs_is_zero_steps_and_negative_is_refused():
    assert total_steps(0, 100) == 0 and total_steps(0.0, 7) == 0
    assert total_steps(1e-6, 100) == 1 and total_steps(0.5, 10) == 5
    with pytest.raises(ConfigError, match="'train.epochs': -1 must be at least 0"):
        load_config(SMOKE, ["train.epochs=-1"])
    for key, bad in (("keep_checkpoints", 0), ("keep_every", -5), ("collapse_logs", 0), ("collapse_entropy", 1.5)):
        with pytest.raises(ConfigError, match=f"'train.{key}'"):
            load_config(SMOKE, [f"train.{key}={bad}"])


def test_kept_and_prune_keep_the_newest_and_the_milestones(tmp_path):
    assert kept([0, 2, 4, 6, 8, 9], 2) == {8, 9}
    assert kept([0, 2, 4, 6, 8, 9], 1, 4) == {0, 4, 8, 9}
    assert kept([3, 6, 7], 5, 3) == {3, 6, 7}
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    for s in (0, 3, 5, 6, 7):
        (folder / f"step_{s:08d}.pth").write_bytes(b"x")
    (folder / "notes.txt").write_text("not a checkpoint")
    prune(tmp_path, 1, 3)
    assert sorted(p.name for p in folder.iterdir()) == [
        "notes.txt", "step_00000000.pth", "step_00000003.pth", "step_00000006.pth", "step_00000007.pth"]


def test_zero_epochs_writes_the_step_0_checkpoint_and_evaluates_it(main_ds, tmp_path):
    data = make_folder(tmp_path / "shapes", classes=3, train_per_class=4, val_per_class=2)
    run = tmp_path / "init"
    r = train_cli("--shards", main_ds, "--config", SMOKE, "--output", run, "--quiet", "train.epochs=0",
                  f"eval.knn_data={data}", "eval.knn_crop=64", "eval.knn_k=5")
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    assert summary["steps"] == 0 and summary["loss"] is None
    assert summary["checkpoint"].endswith("step_00000000.pth")
    assert "0 epochs = 0 steps (0 clips)" in r.stderr
    assert _names(run) == ["step_00000000.pth"]
    state = torch.load(run / "checkpoints" / "step_00000000.pth", map_location="cpu", weights_only=False)
    assert state["step"] == 0 and {"model", "optimizer", "rng", "config"} <= set(state)
    assert all(torch.equal(state["model"][f"student.{k[len('teacher.'):]}"], v)
               for k, v in state["model"].items() if k.startswith("teacher."))
    recs = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert len(recs) == 1 and recs[0]["step"] == 0 and recs[0]["epoch"] == 0.0 and 0 <= recs[0]["knn_top1"] <= 100
    r = run_entry("dora-eval", "knn", run, "--data", data, "--k", "5", "--crop", "64", "--resize", "73",
                  "--workers", "0", "--out", tmp_path / "eval", "--quiet")
    assert r.returncode == 0, r.stderr
    m = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert m["results"]["5"]["top1"] == pytest.approx(recs[0]["knn_top1"])  # the same network, the same protocol
    r = train_cli("export", run / "checkpoints" / "step_00000000.pth", "--to", "timm", tmp_path / "init.pth")
    assert r.returncode == 0, r.stderr
    # the same command again resumes from step 0: nothing to do, nothing logged twice
    r = train_cli("--shards", main_ds, "--config", SMOKE, "--output", run, "--quiet", "train.epochs=0",
                  f"eval.knn_data={data}", "eval.knn_crop=64", "eval.knn_k=5")
    assert r.returncode == 0, r.stderr
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 1 and _names(run) == ["step_00000000.pth"]


def test_keep_checkpoints_and_keep_every(main_ds, tmp_path):
    run = tmp_path / "keep"
    r = train_cli("--shards", main_ds, "--config", SMOKE, "--output", run, "--quiet", "train.epochs=0.3",
                  "train.checkpoint_every=4", "train.keep_checkpoints=1", "train.keep_every=3",
                  "train.maps_every=1000", "train.log_every=100")
    assert r.returncode == 0, r.stderr
    total = json.loads(r.stdout.strip().splitlines()[-1])["steps"]
    assert total >= 7
    # every multiple of 3 is written (checkpoint_every=4 does not divide them) and kept, step 0 included,
    # plus the newest one
    want = sorted({s for s in range(0, total + 1, 3)} | {total})
    assert _names(run) == [f"step_{s:08d}.pth" for s in want]
    run = tmp_path / "three"
    r = train_cli("--shards", main_ds, "--config", SMOKE, "--output", run, "--quiet", "train.epochs=0.3",
                  "train.checkpoint_every=2", "train.keep_checkpoints=3", "train.maps_every=1000",
                  "train.log_every=100")
    assert r.returncode == 0, r.stderr
    total = json.loads(r.stdout.strip().splitlines()[-1])["steps"]
    newest = sorted({s for s in range(2, total + 1, 2)} | {total})[-3:]
    assert _names(run) == [f"step_{s:08d}.pth" for s in newest]
