"""What `dora-eval knn | linear` record is what ran: the precision really used, DINO's top-5, and a
note when the data has a single class (100 % by construction)."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import torch

from dora.eval.knn import knn_classify
from tests.conftest import run_entry
from tests.imagefolders import make_folder
from tests.test_eval_knn import official_style_checkpoint

SMALL = ["--crop", "64", "--resize", "72", "--decoder", "torch", "--workers", "0", "--device", "cpu", "--quiet"]


def dino_knn_classifier(train_f, train_l, test_f, test_l, k, t, num_classes=1000):
    """DINO's eval_knn.knn_classifier restated from its text (one chunk): one-hot votes over its 1000
    hard-coded classes, all of them sorted, top-5 = the first min(5, k)."""
    sim, idx = (test_f @ train_f.t()).topk(k, largest=True, sorted=True)
    one_hot = torch.zeros(test_l.shape[0] * k, num_classes)
    one_hot.scatter_(1, train_l[idx].view(-1, 1), 1)
    probs = (one_hot.view(test_l.shape[0], -1, num_classes) * (sim / t).exp().view(test_l.shape[0], -1, 1)).sum(1)
    _, predictions = probs.sort(1, True)
    correct = predictions.eq(test_l.view(-1, 1))
    top1 = correct.narrow(1, 0, 1).sum().item()
    top5 = correct.narrow(1, 0, min(5, k)).sum().item()
    return top1 * 100.0 / test_l.shape[0], top5 * 100.0 / test_l.shape[0]


def test_top5_counts_only_classes_with_votes_as_dino():
    # 3 classes; the test image lies among class 0's images: its 3 neighbours all vote class 0
    train_f = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0], [0.99, 0.1], [0.98, -0.1],
                                                          [0.0, 1.0], [-1.0, 0.0]]), dim=1)
    train_l = torch.tensor([0, 0, 0, 1, 2])
    test_f = torch.nn.functional.normalize(torch.tensor([[1.0, 0.05], [1.0, -0.05]]), dim=1)
    test_l = torch.tensor([2, 0])
    assert knn_classify(train_f, train_l, test_f, test_l, 3, 0.07, 3) == (50.0, 50.0)  # label 2 got no vote
    assert dino_knn_classifier(train_f, train_l, test_f, test_l, 3, 0.07) == (50.0, 50.0)
    # random few-class sets: ours equals DINO's code, top-1 and top-5
    g = torch.Generator().manual_seed(0)
    for case in range(60):
        c = 1 + case % 7
        n_train, n_test = 3 * c + case % 11, 20
        k = min([1, 3, 5, 10, n_train][case % 5], n_train)  # DINO: k <= n_train
        centers = torch.randn(c, 8, generator=g)
        train_l = torch.cat([torch.arange(c), torch.randint(0, c, (n_train - c,), generator=g)])
        test_l = torch.randint(0, c, (n_test,), generator=g)
        train_f = torch.nn.functional.normalize(centers[train_l] + torch.randn(n_train, 8, generator=g), dim=1)
        test_f = torch.nn.functional.normalize(centers[test_l] + torch.randn(n_test, 8, generator=g), dim=1)
        got = knn_classify(train_f, train_l, test_f, test_l, k, 0.07, c)
        want = dino_knn_classifier(train_f, train_l, test_f, test_l, k, 0.07)
        assert all(math.isclose(a, b) for a, b in zip(got, want, strict=True)), (case, got, want)


def test_knn_records_the_precision_that_ran_and_dinos_top5(tmp_path):
    make_folder(tmp_path / "shapes", classes=3, train_per_class=4, val_per_class=2)
    official_style_checkpoint(tmp_path / "tiny.pth")
    r = run_entry("dora-eval", "knn", "tiny.pth", "--data", "shapes", "--k", "5", "--precision", "bf16", *SMALL,
                  "--out", "knn", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    notes = [ln for ln in r.stderr.splitlines() if "--precision bf16" in ln]
    assert len(notes) == 1 and "fp32" in notes[0], r.stderr
    m = json.loads((tmp_path / "knn" / "metrics.json").read_text())
    assert m["params"]["precision"] == "fp32"
    assert "min(5, k)" in m["top5_definition"] and "vote" in m["top5_definition"]
    assert "note" not in m


def test_one_class_folders_are_flagged(tmp_path):
    data = make_folder(tmp_path / "shapes", classes=2, train_per_class=4, val_per_class=2)
    for split in ("train", "val"):
        shutil.rmtree(data / split / "class_0001")
    official_style_checkpoint(tmp_path / "tiny.pth")
    r = run_entry("dora-eval", "knn", "tiny.pth", "--data", "shapes", "--k", "3", *SMALL, "--out", "knn",
                  cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    warnings = [ln for ln in r.stderr.splitlines() if ln.startswith("warning:")]
    assert len(warnings) == 1 and "single class" in warnings[0], r.stderr
    m = json.loads((tmp_path / "knn" / "metrics.json").read_text())
    assert m["results"]["3"]["top1"] == 100.0 and "single class" in m["note"]
    r = run_entry("dora-eval", "linear", "tiny.pth", "--data", "shapes", "--epochs", "1", "--cached-features",
                  "--batch-size", "4", "--n-last-blocks", "1", "--precision", "fp16", *SMALL, "--out", "lin",
                  cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    warnings = [ln for ln in r.stderr.splitlines() if ln.startswith("warning:")]
    assert len(warnings) == 1 and "single class" in warnings[0], r.stderr
    m = json.loads((tmp_path / "lin" / "metrics.json").read_text())
    assert m["results"]["best_top1"] == 100.0 and "single class" in m["note"]
    assert m["params"]["precision"] == "fp32" and sum("--precision fp16" in ln for ln in r.stderr.splitlines()) == 1
    assert Path(tmp_path / "lin" / "checkpoint.pth").exists()
