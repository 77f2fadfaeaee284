"""`dora-eval davis` on what the official data holds: void (255) pixels in the annotations, scoring that
skips the first and last frame as davis2017-evaluation does, a truncated frame, a fractional --bound-th,
and resume keyed on the model actually built (--config) with --restart."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from dora.eval.davis_score import disk, score_sequence
from tests.conftest import run_entry
from tests.evaldata import square_frames, tiny_checkpoint, write_davis
from tests.test_eval_davis import KEYS


def eval_cli(cwd, *args):
    """`dora-eval ARGS` run as a person types it, in `cwd`."""
    return run_entry("dora-eval", *args, cwd=cwd)


def void_davis(root, n: int = 5):
    """A DAVIS folder whose annotations, like the official ones, hold void (255): a ring around the square."""
    frames, labels = square_frames(n, 96, 160, side=32, step=6)
    for lab in labels:
        ys, xs = np.nonzero(lab)
        ring = np.zeros_like(lab, dtype=bool)
        ring[ys.min() - 2:ys.max() + 3, xs.min() - 2:xs.max() + 3] = True
        lab[ring & (lab == 0)] = 255
    write_davis(root, "square", frames, labels)
    return frames, labels


def test_void_in_the_annotations_scores_as_the_reference(tmp_path):
    _, labels = void_davis(tmp_path / "DAVIS")
    tiny_checkpoint(tmp_path / "tiny.pth")
    r = eval_cli(tmp_path, "davis", "tiny.pth", "--davis", "DAVIS", "--device", "cpu", "--quiet",
                 "--short-side", "96")
    assert r.returncode == 0, r.stderr
    out = tmp_path / "runs" / "eval" / "davis"
    data = json.loads((out / "metrics.json").read_text())
    assert set(data["per_object"]) == {"square_1"} and all(np.isfinite(data[k]) for k in KEYS)
    with Image.open(out / "square" / "00000.png") as im:
        assert np.array_equal(np.array(im), labels[0])  # frame 0 is the raw annotation, void included
    # --eval-only reads what the reference reads: frames 1..T-2; frames 0 and T-1 may be absent
    res = tmp_path / "middle"
    shutil.copytree(out, res)
    (res / "square" / "00000.png").unlink()
    (res / "square" / "00004.png").unlink()
    r = eval_cli(tmp_path, "davis", "--davis", "DAVIS", "--eval-only", "middle", "--out", "scored")
    assert r.returncode == 0, r.stderr
    scored = json.loads((tmp_path / "scored" / "metrics.json").read_text())
    assert all(scored[k] == pytest.approx(data[k]) for k in KEYS)


def test_void_counts_as_background_in_semi_supervised_scores():
    # davis2017-evaluation passes no void mask in the semi-supervised task: void is background, so a
    # result that marks the void ring as the object loses J; a 255 in frames 0 and T-1 is never read
    gt = np.zeros((4, 20, 20), np.uint8)
    gt[:, 5:10, 5:10] = 1
    gt[:, 4, 4:11] = 255
    res = np.where(gt == 255, 1, gt)
    res[0] = res[-1] = 255
    j, f = score_sequence(gt, res)
    assert j.shape == (1, 2) and j[0] == pytest.approx(25 / 32)


def test_truncated_frame_is_named_in_a_warning_and_recorded(tmp_path):
    frames, labels = square_frames(4, 96, 160, side=32, step=6)
    write_davis(tmp_path / "D", "sq", frames, labels)
    jpg = tmp_path / "D" / "JPEGImages" / "480p" / "sq" / "00002.jpg"
    data = jpg.read_bytes()
    jpg.write_bytes(data[: len(data) // 2])  # cut short, as an interrupted copy leaves it
    tiny_checkpoint(tmp_path / "tiny.pth")
    r = eval_cli(tmp_path, "davis", "tiny.pth", "--davis", "D", "--device", "cpu", "--quiet", "--short-side", "64")
    assert r.returncode == 0, r.stderr
    warns = [line for line in r.stderr.splitlines() if line.startswith("warning:")]
    named = str(jpg.relative_to(tmp_path))  # as the user gave the folder
    assert len(warns) == 1 and named in warns[0] and "truncated" in warns[0], r.stderr
    rec = json.loads((tmp_path / "runs" / "eval" / "davis" / "metrics.json").read_text())
    assert rec["truncated_frames"] == [named]


def test_fractional_bound_th_uses_the_references_disk():
    # davis2017-evaluation: disk(bound_pix) of skimage, a grid np.arange(-r, r + 1) (half-integer
    # offsets for a fractional r), dilated by cv2 about the kernel's centre
    assert disk(1.3).tolist() == [[0, 0, 0, 0], [0, 1, 1, 0], [0, 1, 1, 0], [0, 0, 0, 0]]
    assert disk(2.5).shape == (6, 6) and disk(2.5)[1:5, 1:5].all() and disk(2.5).sum() == 16
    assert disk(2.0).sum() == 13 and disk(2).shape == (5, 5)
    import skimage.morphology as skm  # a test dependency: the reference's own disk()
    for r in (1, 1.0, 1.3, 1.5, 2, 2.5, 3.7, 4, 7.2):
        assert np.array_equal(disk(r), skm.disk(r)), r


def write_config(path, **model) -> str:
    lines = "".join(f"  {k}: {v}\n" for k, v in model.items())
    path.write_text("model:\n  arch: vit_tiny_patch16_224\n  depth: 2\n" + lines)
    return str(path)


def test_resume_refuses_another_model_config_and_restart_starts_fresh(tmp_path):
    frames, labels = square_frames(4, 64, 96, side=16, step=4)
    write_davis(tmp_path / "D", "sq", frames, labels)
    tiny_checkpoint(tmp_path / "tiny.pth")
    six = write_config(tmp_path / "six_heads.yaml", num_heads=6)  # same weights, another model
    args = ("davis", "tiny.pth", "--davis", "D", "--device", "cpu", "--quiet", "--short-side", "64")
    r = eval_cli(tmp_path, *args)
    assert r.returncode == 0, r.stderr
    png = tmp_path / "runs" / "eval" / "davis" / "sq" / "00002.png"
    before = png.stat().st_mtime_ns
    r = eval_cli(tmp_path, *args, "--config", six)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
    assert "another run" in r.stderr and "heads" in r.stderr and "--restart" in r.stderr, r.stderr
    assert png.stat().st_mtime_ns == before
    r = eval_cli(tmp_path, *args, "--config", six, "--restart")
    assert r.returncode == 0, r.stderr
    assert png.stat().st_mtime_ns != before
    rec = json.loads((tmp_path / "runs" / "eval" / "davis" / "metrics.json").read_text())
    assert rec["arch"]["num_heads"] == 6 and rec["resumed_frames"] == 0
    r = eval_cli(tmp_path, *args, "--config", six)  # now the same run: resumed
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "runs" / "eval" / "davis" / "metrics.json").read_text())["resumed_frames"] == 4

