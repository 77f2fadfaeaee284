"""`dora-eval linear` resumes only what the same checkpoint content and settings produced; `--restart`
starts again; the DataLoader workers change no number (image i's view depends on (seed, epoch, i) only)."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from PIL import Image
from torchvision import transforms as T

from dora.eval.images import MEAN, STD, TrainViews, load_layout, view_seed
from pipeline.video import sha256_file
from tests.conftest import run_entry
from tests.imagefolders import make_folder
from tests.test_eval_knn import official_style_checkpoint

COMMON = ["--data", "shapes", "--crop", "64", "--resize", "72", "--n-last-blocks", "1", "--batch-size", "8",
          "--device", "cpu", "--decoder", "torch", "--lr", "1", "--quiet"]


def linear(cwd: Path, *args: str):
    return run_entry("dora-eval", "linear", *args, cwd=cwd)


def records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_a_replaced_checkpoint_is_not_resumed(tmp_path):
    make_folder(tmp_path / "shapes", classes=3, train_per_class=4, val_per_class=2)
    ckpt = official_style_checkpoint(tmp_path / "ckpt.pth", seed=0)
    args = ["ckpt.pth", *COMMON, "--epochs", "2", "--cached-features", "--workers", "0", "--out", "run"]
    assert linear(tmp_path, *args).returncode == 0
    old = json.loads((tmp_path / "run" / "metrics.json").read_text())
    official_style_checkpoint(ckpt, seed=1)  # other weights at the same path
    r = linear(tmp_path, *args)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    line = r.stderr.strip().splitlines()[-1]
    assert line.startswith("error:") and "checkpoint_sha256" in line and "--restart" in line, line
    assert json.loads((tmp_path / "run" / "metrics.json").read_text()) == old  # nothing overwritten

    r = linear(tmp_path, *args, "--restart")
    assert r.returncode == 0, r.stderr
    assert "resuming" not in r.stderr
    new = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert new["checkpoint_sha256"] == sha256_file(ckpt) != old["checkpoint_sha256"]
    fresh = [*args[:-1], "fresh"]
    assert linear(tmp_path, *fresh).returncode == 0
    assert records(tmp_path / "run" / "metrics.jsonl") == records(tmp_path / "fresh" / "metrics.jsonl")
    assert new["results"] == json.loads((tmp_path / "fresh" / "metrics.json").read_text())["results"]
    assert new["results"] != old["results"]


def test_workers_change_no_number_and_may_change_on_resume(tmp_path):
    make_folder(tmp_path / "shapes", classes=3, train_per_class=4, val_per_class=2)
    official_style_checkpoint(tmp_path / "ckpt.pth")
    args = ["ckpt.pth", *COMMON, "--epochs", "2"]
    for w in ("0", "2"):
        r = linear(tmp_path, *args, "--workers", w, "--out", f"w{w}")
        assert r.returncode == 0, r.stderr
    assert records(tmp_path / "w0" / "metrics.jsonl") == records(tmp_path / "w2" / "metrics.jsonl")
    r = linear(tmp_path, *args, "--workers", "2", "--out", "w0")  # resumed with other workers: accepted
    assert r.returncode == 0 and "resuming after epoch 1" in r.stderr, r.stderr


def test_training_views_are_torchvisions_transform_seeded_per_image(tmp_path):
    """TrainViews gives, for image i, exactly DINO's RandomResizedCrop + flip (torchvision) run from the
    seed view_seed(epoch_seed, i)."""
    data = make_folder(tmp_path / "shapes", classes=2, train_per_class=3, val_per_class=1, size=(120, 90))
    train, _ = load_layout(data)
    views = TrainViews(train, 64, epoch_seed=12345)
    dino = T.Compose([T.RandomResizedCrop(64), T.RandomHorizontalFlip(), T.ToTensor(), T.Normalize(MEAN, STD)])
    for i in range(len(train)):
        torch.manual_seed(view_seed(12345, i))
        want = dino(Image.open(train.paths[i]).convert("RGB"))
        got, idx, err = views[i]
        assert idx == i and not err and torch.equal(got, want), i
    assert not torch.equal(TrainViews(train, 64, epoch_seed=1)[0][0], views[0][0])  # another epoch, another view
