"""`dora-eval`: attention maps and tracking sheets from our checkpoints and official-style ones."""

from __future__ import annotations

import subprocess

import torch
from PIL import Image

from tests.conftest import run_entry
from tests.test_train import SMOKE, train_cli
from tests.videos import decode_all


def eval_cli(*args) -> subprocess.CompletedProcess:
    return run_entry("dora-eval", *args)


def test_attention_and_tracking_pngs(main_ds, tmp_path, bikes):
    run = tmp_path / "run"
    assert train_cli("--shards", main_ds, "--config", SMOKE, "--output", run, "--quiet",
                     "train.epochs=0.1").returncode == 0
    ckpt = sorted((run / "checkpoints").iterdir())[-1]
    _, frames = decode_all(bikes)
    img = tmp_path / "frame.png"
    Image.fromarray(frames[40]).save(img)
    r = eval_cli("attention", ckpt, img, "--out", tmp_path / "ev", "--size", "64")
    assert r.returncode == 0, r.stderr
    with Image.open(tmp_path / "ev" / "attention_frame.png") as im:
        assert im.format == "PNG" and im.height > 64  # the image and 3 heads of vit_tiny (tests/test_pictures.py)
    r = eval_cli("tracking", ckpt, "--shards", main_ds, "--out", tmp_path / "ev", "--n", "2")
    assert r.returncode == 0, r.stderr
    for i in range(2):
        with Image.open(tmp_path / "ev" / f"tracking_{i:02d}.png") as im:
            assert im.format == "PNG" and im.width >= 4 * 480  # T=4 frames, each >= 480 px wide
    # an official-style checkpoint (backbone only) with the config given explicitly
    state = torch.load(ckpt, map_location="cpu", weights_only=False)
    official = {"teacher": {f"module.backbone.{k[len('teacher.backbone.'):]}": v
                            for k, v in state["model"].items() if k.startswith("teacher.backbone.")}}
    torch.save(official, tmp_path / "official.pth")
    timm_rule = tmp_path / "smoke_timm.yaml"  # the official file's own rule is DINO's resampling: ask for timm's
    timm_rule.write_text(SMOKE.read_text().replace("model:\n", "model:\n  pos_embed_resample: timm\n"))
    r = eval_cli("attention", tmp_path / "official.pth", img, "--out", tmp_path / "ev2", "--size", "64",
                 "--config", timm_rule)
    assert r.returncode == 0, r.stderr
    with Image.open(tmp_path / "ev" / "attention_frame.png") as a, Image.open(
            tmp_path / "ev2" / "attention_frame.png") as b:
        assert list(a.getdata()) == list(b.getdata())  # same weights, same maps
    bad = tmp_path / "notes.png"
    bad.write_text("not an image")
    r = eval_cli("attention", ckpt, bad, "--out", tmp_path / "ev3")
    assert r.returncode == 2 and "not a readable image" in r.stderr and "Traceback" not in r.stderr
