"""Online k-NN during pretraining: `eval.knn_data=ROOT eval.every_epochs=N` logs the teacher's k-NN top-1."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

from tests.conftest import ROOT
from tests.imagefolders import make_folder
from tests.test_train import SMOKE, train_cli


def test_online_knn_is_logged_and_does_not_change_training(main_ds, tmp_path):
    data = make_folder(tmp_path / "shapes", classes=3, train_per_class=4, val_per_class=2)
    common = ["--shards", main_ds, "--config", SMOKE, "--quiet", "train.epochs=0.2"]
    r = train_cli(*common, "--output", tmp_path / "plain")
    assert r.returncode == 0, r.stderr
    r = train_cli(*common, "--output", tmp_path / "knn", f"eval.knn_data={data}", "eval.every_epochs=0.1",
                  "eval.knn_crop=64", "eval.knn_k=5")
    assert r.returncode == 0, r.stderr
    recs = [json.loads(x) for x in (tmp_path / "knn" / "metrics.jsonl").read_text().splitlines()]
    knn = [x for x in recs if "knn_top1" in x]
    steps = [x["step"] for x in recs if "loss" in x]
    assert len(knn) >= 3 and knn[-1]["step"] == steps[-1]
    assert recs[0] is knn[0] and (recs[0]["step"], recs[0]["epoch"]) == (0, 0.0)  # the random init, before step 1
    # DINO's top-5: a class without votes is no guess, so 3 classes do not make top-5 100 % by construction
    assert all(0.0 <= x["knn_top1"] <= x["knn_top5"] <= 100.0 for x in knn)
    first = next(x for x in recs if "loss" in x)
    ipe = round(first["step"] / first["epoch"])  # training steps per epoch
    every = round(0.1 * ipe)
    assert [x["step"] for x in knn] == sorted({0} | {s for s in steps if s % every == 0} | {steps[-1]})
    plain = [(x["step"], x["loss"]) for x in map(json.loads, (tmp_path / "plain" / "metrics.jsonl").read_text()
                                                 .splitlines())]
    assert plain == [(x["step"], x["loss"]) for x in recs if "loss" in x]  # evaluation draws no training randomness
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    ev = EventAccumulator(str(tmp_path / "knn" / "tb"))
    ev.Reload()
    assert "eval/knn_top1" in ev.Tags()["scalars"]
    # kill -9 after a checkpoint, resume: every evaluation logged once, with the same numbers
    args = [sys.executable, "-m", "dora.train_cli", *map(str, common), "--output", str(tmp_path / "killed"),
            f"eval.knn_data={data}", "eval.every_epochs=0.1", "eval.knn_crop=64", "eval.knn_k=5",
            "train.checkpoint_every=2"]
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    target = tmp_path / "killed" / "checkpoints" / "step_00000004.pth"
    deadline = time.time() + 300
    while not target.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    assert proc.poll() is None
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert subprocess.run(args, cwd=ROOT, capture_output=True).returncode == 0
    again = [json.loads(x) for x in (tmp_path / "killed" / "metrics.jsonl").read_text().splitlines()]
    pick = lambda rs: [(x["step"], x["knn_top1"], x["knn_top5"]) for x in rs if "knn_top1" in x]  # noqa: E731
    assert pick(again) == pick(recs)  # resumed past step 0: its evaluation is not repeated
    bad = train_cli(*common, "--output", tmp_path / "bad", f"eval.knn_data={tmp_path / 'nowhere'}")
    assert bad.returncode == 2 and "nowhere: data folder not found" in bad.stderr and "Traceback" not in bad.stderr
