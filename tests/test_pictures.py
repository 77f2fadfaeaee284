"""Pictures a researcher can read (issue 19): attention per head over the image with a colour scale,
tracking and training maps on the un-augmented frames at a readable size, knn.png naming the k used."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dora.config import load_config
from dora.data.batches import BatchSource
from tests.conftest import run_cli, run_entry
from tests.imagefolders import make_folder
from tests.test_eval_knn import official_style_checkpoint
from tests.test_train import SMOKE, train_cli
from tests.videos import decode_all


@pytest.fixture(scope="module")
def shards(tmp_path_factory, bikes) -> Path:
    """bikes.mp4 sharded as the smoke config reads it (4 frames 0.5 s apart)."""
    out = tmp_path_factory.mktemp("pictures") / "shards"
    r = run_cli("shard", bikes, "--out", out, "--clip-frames", "4", "--clip-stride-s", "0.5", "--workers", "1",
                "--quiet")
    assert r.returncode == 0, r.stderr
    return out


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    """A DINO-style file holding the smoke config's tiny ViT (3 heads) with random weights."""
    return official_style_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.pth")


def rgb(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def luminance(a: np.ndarray) -> np.ndarray:
    return a[..., :3].astype(np.float64) @ np.array([0.299, 0.587, 0.114])


def corr(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


def resized(a: np.ndarray, w: int, h: int) -> np.ndarray:
    return np.asarray(Image.fromarray(a).resize((w, h), Image.BICUBIC))


def stored_frames(shards: Path, clip: int, batch_size: int) -> tuple[list[np.ndarray], list[bytes]]:
    """Clip `clip` of batch 0 as training draws it with the smoke config: its frames decoded straight
    from the shard's JPEGs (no augmentation), and the JPEGs."""
    cfg = load_config(SMOKE, ("train.seed=0", f"train.batch_size={batch_size}"))
    jpegs = BatchSource.from_config([str(shards)], cfg)(0).jpegs[clip]
    return [np.asarray(Image.open(io.BytesIO(b)).convert("RGB")) for b in jpegs], jpegs


def check_frames_drawn(png: np.ndarray, frames: list[np.ndarray], min_width: int = 480) -> None:
    """Each stored frame is in the sheet at >= min_width px, unchanged but for the resize, and its
    panel with the maps still shows the frame."""
    from dora.train.viz import SheetLayout

    lay = SheetLayout.of(len(frames), frames[0].shape[:2], min_width)
    assert (png.shape[1], png.shape[0]) == lay.size and lay.w >= min_width
    for t, f in enumerate(frames):
        want = resized(f, lay.w, lay.h).astype(np.float64)
        x0, y0, x1, y1 = lay.frame(t)
        assert np.abs(png[y0:y1, x0:x1] - want).mean() < 1.0, t  # the stored frame, not a crop of it
        x0, y0, x1, y1 = lay.maps(t)
        assert corr(luminance(png[y0:y1, x0:x1]), luminance(want)) > 0.3, t


def test_attention_sheet_has_one_labelled_overlay_per_head_and_a_colour_scale(ckpt, tmp_path, bikes):
    _, video = decode_all(bikes)
    img = tmp_path / "frame.png"
    Image.fromarray(video[40]).save(img)
    r = run_entry("dora-eval", "attention", ckpt, img, "--out", tmp_path / "ev", "--size", "64", "--config", SMOKE)
    assert r.returncode == 0, r.stderr
    sheet = rgb(tmp_path / "ev" / "attention_frame.png")
    assert sheet.shape[0] > 2 * 64  # panels with titles and a colour bar, not a strip of 64 px tiles

    from dora.eval.teacher import attention_figure, attention_maps, attention_sheet, teacher_model

    model, _ = teacher_model(ckpt, SMOKE, ())
    again = attention_sheet(model, img, tmp_path, 64)
    assert np.array_equal(rgb(again), sheet)  # what the command drew
    pic, maps = attention_maps(model, img, 64)
    assert maps.shape == (3, pic.shape[0] // 16, pic.shape[1] // 16)
    assert 0.5 < maps.sum(axis=(1, 2)).max() <= 1.0 + 1e-5  # softmax weights, not scaled to a max of 1
    fig = attention_figure(pic, maps, "t")
    fig.savefig(tmp_path / "fig.png")
    png = rgb(tmp_path / "fig.png")
    assert png.shape == sheet.shape
    panels = {ax.get_title(): ax for ax in fig.axes if ax.get_title()}
    assert set(panels) == {"image", "head 0", "head 1", "head 2"}
    bars = [ax for ax in fig.axes if "attention weight" in ax.get_ylabel()]
    assert len(bars) == 1
    climits = {panels[f"head {i}"].images[-1].get_clim() for i in range(3)}
    assert len(climits) == 1  # one colour scale for every head
    lo, hi = climits.pop()
    assert 0 <= lo < hi <= maps.max() + 1e-9
    height = png.shape[0]
    for i in range(3):
        b = panels[f"head {i}"].get_window_extent()
        x0, x1, y0, y1 = int(b.x0) + 2, int(b.x1) - 2, height - int(b.y1) + 2, height - int(b.y0) - 2
        crop = png[y0:y1, x0:x1]
        # the map is drawn over the image: the panel follows the image's light and dark
        assert corr(luminance(crop), luminance(resized(pic, x1 - x0, y1 - y0))) > 0.2, i
        assert crop.std(axis=(0, 1)).max() > 5


def test_tracking_is_drawn_on_the_unaugmented_frames_at_a_readable_size(ckpt, shards, tmp_path):
    r = run_entry("dora-eval", "tracking", ckpt, "--shards", shards, "--out", tmp_path / "ev", "--n", "2",
                  "--config", SMOKE)
    assert r.returncode == 0, r.stderr
    for i in range(2):
        png = rgb(tmp_path / "ev" / f"tracking_{i:02d}.png")
        frames, _ = stored_frames(shards, i, 2)
        assert png.shape[1] >= 480 * len(frames)  # 4 frames side by side, each at least 480 px wide
        check_frames_drawn(png, frames)

    # the maps are the teacher's on the whole stored frames (resized to 16 px multiples), not on a crop
    from dora.eval.teacher import teacher_model
    from dora.train.viz import SheetLayout, overlay, teacher_frames

    model, _ = teacher_model(ckpt, SMOKE, ("train.seed=0", "train.batch_size=2"))
    frames, jpegs = stored_frames(shards, 0, 2)
    _, x = teacher_frames(jpegs, 64, 16)
    assert x.shape[-2:] == (64, round(64 * frames[0].shape[1] / frames[0].shape[0]) // 16 * 16)
    with torch.no_grad():
        _, maps, _ = model.track_objects(x[None, :, None])
    png = rgb(tmp_path / "ev" / "tracking_00.png")
    lay = SheetLayout.of(len(frames), frames[0].shape[:2])
    for t, f in enumerate(frames):
        want = overlay(resized(f, lay.w, lay.h), maps[0, t, 0], (x.shape[-2] // 16, x.shape[-1] // 16))
        x0, y0, x1, y1 = lay.maps(t)
        assert np.abs(png[y0:y1, x0:x1].astype(np.float64) - want).mean() < 1.0, t


def test_training_maps_are_drawn_on_the_unaugmented_frames(shards, tmp_path):
    run = tmp_path / "run"
    r = train_cli("--shards", shards, "--config", SMOKE, "--output", run, "--quiet", "train.epochs=0")
    assert r.returncode == 0, r.stderr
    png = rgb(run / "maps" / "step_00000000.png")
    frames, _ = stored_frames(shards, 0, load_config(SMOKE).train.batch_size)
    assert png.shape[1] >= 480 * len(frames)
    check_frames_drawn(png, frames)


def test_knn_png_and_metrics_name_the_k_used(ckpt, tmp_path):
    data = make_folder(tmp_path / "shapes", classes=3, train_per_class=4, val_per_class=2)
    out = tmp_path / "knn"
    r = run_entry("dora-eval", "knn", ckpt, "--data", data, "--k", "5", "100", "--crop", "64", "--resize", "72",
                  "--decoder", "torch", "--workers", "0", "--out", out, "--config", SMOKE)
    assert r.returncode == 0, r.stderr
    res = json.loads((out / "metrics.json").read_text())["results"]
    assert (res["5"]["k_used"], res["100"]["k_used"]) == (5, 12)  # 12 train images
    assert (out / "knn.png").stat().st_size > 1000

    from dora.eval.knn import plot

    unclamped = {k: {**v, "k_used": int(k)} for k, v in res.items()}
    a, b = plot(res, tmp_path / "a.png", "t"), plot(unclamped, tmp_path / "b.png", "t")
    assert not np.array_equal(rgb(a), rgb(b))  # the picture says which k was really used

    from dora.eval.knn import knn_figure

    labels = [t.get_text() for t in knn_figure(res, "t").axes[0].get_xticklabels()]
    assert labels[0] == "k=5" and labels[1].startswith("k=12") and "asked 100" in labels[1]
