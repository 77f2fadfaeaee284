"""DoRA⋆ (appendix D): `dora-train --images FOLDER` on a small generated folder of real JPEGs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision.io import decode_jpeg, encode_jpeg

from dora.config import load_config
from dora.data.images import ImageSource, find_images, jpeg_size
from dora.data.loader import Loader
from pipeline.video.samples import sample_video
from tests.conftest import ROOT
from tests.videos import decode_all

SMOKE = ROOT / "configs" / "smoke.yaml"
STAR = ["data.clip_frames=1", "data.precrop_scale=[1.0,1.0]"]


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory) -> Path:
    """An ImageFolder of 14 JPEGs (frames of two real videos, three sizes, .jpg/.JPEG, a nested
    sub-folder) plus files that are not JPEGs (ignored)."""
    root = tmp_path_factory.mktemp("imgs") / "imgs"
    k = 0
    sources = (("bikes.mp4", (160, 120)), ("carphone_pristine.mp4", (96, 128)), ("bigbuckbunny.mp4", (200, 112)))
    for video, size in sources:
        _, frames = decode_all(sample_video(video), size=size)
        for j, f in enumerate(frames[::max(1, len(frames) // 5)][:5]):
            if k == 14:
                break
            d = root / video.split(".")[0] / ("nested" if j % 2 else "")
            d.mkdir(parents=True, exist_ok=True)
            data = encode_jpeg(torch.from_numpy(np.ascontiguousarray(f)).permute(2, 0, 1), quality=90)
            (d / f"img_{k:02d}{'.JPEG' if k % 3 == 0 else '.jpg'}").write_bytes(data.numpy().tobytes())
            k += 1
    (root / "README.txt").write_text("not an image")
    (root / "bikes" / "labels.csv").write_text("a,b\n")
    return root


def test_folder_listing_and_jpeg_sizes(image_folder):
    files = find_images(image_folder)
    assert len(files) == 14 and all(f.lower().endswith((".jpg", ".jpeg")) for f in files)
    assert any("nested" in f for f in files) and any(f.endswith(".JPEG") for f in files)
    for f in files:
        data = (image_folder / f).read_bytes()
        img = decode_jpeg(torch.frombuffer(bytearray(data), dtype=torch.uint8))
        assert jpeg_size(data) == (img.shape[2], img.shape[1])


def test_both_loaders_give_the_same_one_frame_clips(image_folder):
    cfg = load_config(SMOKE, [*STAR, "train.batch_size=3"])
    source = ImageSource.from_config(image_folder, cfg)
    dali = Loader(source, 2, torch.device("cpu"), "dali")
    plain = Loader(source, 2, torch.device("cpu"), "torch")
    a, b = next(dali), next(plain)
    assert a.positions == b.positions == [6, 7, 8]
    assert a.globals_.shape == b.globals_.shape == (3, 1, 2, 3, 64, 64)
    assert a.locals_.shape == b.locals_.shape == (3, 1, 2, 3, 32, 32)
    assert float((a.globals_ - b.globals_).abs().mean()) < 0.05
    assert float((a.locals_ - b.locals_).abs().mean()) < 0.05
    epoch = [source.clip(p).video for p in range(len(source))]  # one epoch: every image once
    assert sorted(epoch) == find_images(image_folder)


def _train(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "dora.train_cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=900, env=env)


@pytest.mark.parametrize("backend", ["torch", "dali"])
def test_dora_star_trains_on_an_image_folder(image_folder, tmp_path, backend):
    (tmp_path / "imgs").symlink_to(image_folder, target_is_directory=True)
    r = _train(tmp_path, "--images", "imgs", "--config", str(SMOKE), "--quiet", *STAR, f"train.loader={backend}",
               "train.epochs=0.5", "train.checkpoint_every=2")
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    run = tmp_path / "runs" / "smoke"  # 14 images, batch 2: 7 steps per epoch, half an epoch
    assert summary["steps"] == 4 and summary["backend"] == backend and np.isfinite(summary["loss"])
    assert sorted(p.name for p in (run / "checkpoints").glob("*.pth")) == ["step_00000002.pth", "step_00000004.pth"]
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 4 and all(np.isfinite(x["loss"]) and x["loss_global"] > 0 for x in rows)
    assert list((run / "maps").glob("*.png"))


def test_bad_image_folders_are_one_line_exit_2(image_folder, tmp_path):
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    (tmp_path / "empty" / "sub" / "a.png").write_bytes(b"\x89PNG")
    cases = [
        (["--images", "empty"], "no JPEG files"),
        (["--images", "missing"], "not a folder"),
        (["--images", str(image_folder), "--shards", "x"], "not both"),
        ([], "not neither"),
        (["--images", str(image_folder), "data.clip_frames=2"], "one-frame clips"),
    ]
    for args, says in cases:
        r = _train(tmp_path, *args, "--config", str(SMOKE), "--quiet", *([] if "clip_frames" in str(args) else STAR))
        assert r.returncode == 2 and says in r.stderr, (args, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
        assert not (tmp_path / "runs").exists()
