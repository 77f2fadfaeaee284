"""`dora-eval davis`: the DAVIS-2017 scores on known masks, DINO's label propagation on a generated
sequence with a known answer, the command end to end, and bad layouts."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from dora.eval.davis_score import boundary_map, f_measure, jaccard, score_sequence, statistics
from dora.eval.propagation import PropagationCfg, first_labels, propagate, to_labels
from tests.evaldata import square_frames, tiny_checkpoint, write_davis

KEYS = ["J&F-Mean", "J-Mean", "J-Recall", "J-Decay", "F-Mean", "F-Recall", "F-Decay"]


def eval_cli(cwd, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dora.eval_cli", *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, timeout=600)


def square(h=100, w=100, y=20, x=20, side=40) -> np.ndarray:
    m = np.zeros((h, w), bool)
    m[y:y + side, x:x + side] = True
    return m


def test_identical_masks_score_one():
    gt = np.stack([square(x=20 + 3 * t) * 1 + square(y=70, x=5, side=10) * 2 for t in range(5)]).astype(np.uint8)
    j, f = score_sequence(gt, gt.copy())
    assert j.shape == (2, 3) and np.all(j == 1) and np.all(f == 1)


def test_shifted_square_jaccard_and_boundary_f():
    gt, seg = square(), square(x=30)  # 40x40 squares, 10 px apart
    assert jaccard(gt, seg) == pytest.approx(30 * 40 / (50 * 40))  # 0.6
    # the boundary of a square at rows/cols 20..59 is the 41x41 loop at rows/cols 19..59 (half a pixel
    # towards the origin): 160 pixels
    assert boundary_map(gt).sum() == 160
    # 100x100 -> tolerance ceil(0.008 * 141.4) = 2 px (disk of radius 2). gt boundary pixels within 2 px of
    # the shifted one: top and bottom rows at cols 27..59 (33 each) + 4 pixels of gt's right side next to
    # the other's corners (rows 20, 21, 57, 58) = 70; the same count the other way -> P = R = F = 70/160
    assert f_measure(seg, gt) == pytest.approx(70 / 160)
    # with a 10 px tolerance the vertical sides match too
    assert f_measure(seg, gt, bound_th=10) == pytest.approx(1.0)
    # nothing predicted: P = 1, R = 0 -> F = 0; J = 0
    assert f_measure(np.zeros_like(gt), gt) == 0 and jaccard(gt, np.zeros_like(gt)) == 0


def test_statistics_mean_recall_decay():
    v = np.array([1.0, 0.9, 0.8, 0.6, 0.4, 0.3, 0.2, 0.1, 0.0])
    m, r, d = statistics(v)
    assert m == pytest.approx(v.mean()) and r == pytest.approx(4 / 9)
    # quarters at round(linspace(1, 9, 5)) - 1 = 0, 2, 4, 6, 8 -> first [0:3], last [6:9]
    assert d == pytest.approx(v[0:3].mean() - v[6:9].mean())


def test_input_size_is_dinos():
    from dora.eval.propagation import input_size

    cfg = PropagationCfg()
    assert input_size(480, 854, cfg) == (480, 832)  # DAVIS 480p: 854 -> 832
    assert input_size(854, 480, cfg) == (832, 480)
    assert input_size(96, 160, cfg) == (480, 768)
    assert input_size(100, 100, cfg) == (480, 448)  # square: the long side is the width (see DEVIATIONS)


def colour_features(img: np.ndarray, patch: int) -> torch.Tensor:
    """A feature with a known answer: the one-hot of each patch's dominant colour channel [h*w, 3]."""
    x = torch.from_numpy(img).float().permute(2, 0, 1)[None]
    mean = F.avg_pool2d(x, patch)[0]  # [3, h, w]
    return F.one_hot(mean.argmax(0).reshape(-1), 3).float()


def test_propagation_tracks_a_moving_square_better_than_copying_the_first_mask():
    patch, n = 8, 12
    frames, labels = square_frames(n, 64, 128, side=24, step=5)
    grid = (64 // patch, 128 // patch)
    cfg = PropagationCfg(radius=4)  # a 9x9 window of patches; the square moves < 1 patch per frame
    segs = list(propagate(first_labels(labels[0], grid), (colour_features(f, patch) for f in frames), cfg))
    assert len(segs) == n - 1
    pred = [to_labels(s, patch, (64, 128)) for s in segs]
    j_prop = np.mean([jaccard(labels[t] == 1, pred[t - 1] == 1) for t in range(1, n)])
    j_copy = np.mean([jaccard(labels[t] == 1, labels[0] == 1) for t in range(1, n)])
    assert j_copy < 0.35 and j_prop > 0.8, (j_prop, j_copy)
    # random features carry no answer: propagation is no better than copying
    rnd = torch.Generator().manual_seed(0)
    segs_r = propagate(first_labels(labels[0], grid), (torch.randn(grid[0] * grid[1], 16, generator=rnd)
                                                        for _ in frames), cfg)
    j_rand = np.mean([jaccard(labels[t] == 1, to_labels(s, patch, (64, 128)) == 1) for t, s in enumerate(segs_r, 1)])
    assert j_rand < j_prop - 0.3


def test_topk_and_neighbourhood_restrict_the_sources():
    from dora.eval.propagation import neighbourhood, propagate_step

    # 1x5 grid, one context frame; target patch 0 is identical to source 4 only, but source 4 lies
    # outside a radius-1 window: the label comes from the best source inside it
    src = F.normalize(torch.tensor([[1.0, 0.2], [0.0, 1.0], [0.0, 1.0], [0.0, 1.0], [1.0, 0.0]]), dim=1)
    tgt = torch.tensor([[1.0, 0.0]] * 5)
    segs = torch.eye(5)[None]  # label i = source patch i
    out = propagate_step(tgt, src[None], segs, neighbourhood(1, 5, 1), PropagationCfg(topk=1))
    assert out[:, 0].argmax() == 0 and out[0, 0] == pytest.approx(1.0)
    out = propagate_step(tgt, src[None], segs, None, PropagationCfg(topk=1))
    assert out[:, 0].argmax() == 4
    # top-2 mixes the two best in proportion to exp(cos / T)
    out = propagate_step(tgt, src[None], segs, None, PropagationCfg(topk=2))
    w0, w4 = np.exp(float(src[0, 0]) / 0.1), np.exp(1 / 0.1)
    assert out[0, 0] == pytest.approx(w0 / (w0 + w4), rel=1e-4)


def test_davis_cli_end_to_end_resume_and_eval_only(tmp_path):
    frames, labels = square_frames(5, 96, 160, side=32, step=6)
    write_davis(tmp_path / "DAVIS", "square", frames, labels)
    tiny_checkpoint(tmp_path / "tiny.pth")
    r = eval_cli(tmp_path, "davis", "tiny.pth", "--davis", "DAVIS", "--device", "cpu", "--json")
    assert r.returncode == 0, r.stderr
    out = tmp_path / "runs" / "eval" / "davis"
    data = json.loads((out / "metrics.json").read_text())
    assert data["task"] == "davis" and data["arch"]["depth"] == 2 and data["params"]["n_last"] == 7
    assert data["params"]["short_side"] == 480 and len(data["checkpoint_sha256"]) == 64
    assert all(0 <= data[k] <= 1 for k in KEYS if "Decay" not in k) and set(data["per_object"]) == {"square_1"}
    assert "it/s" in r.stderr or "img/s" in r.stderr  # the progress bar
    pngs = sorted((out / "square").glob("*.png"))
    assert [p.name for p in pngs] == [f"{t:05d}.png" for t in range(5)]
    with Image.open(pngs[2]) as im:
        assert im.mode == "P" and im.size == (160, 96)
        assert im.getpalette()[:6] == [0, 0, 0, 128, 0, 0]  # the annotations' palette
    with Image.open(pngs[0]) as im:
        assert np.array_equal(np.array(im), labels[0])  # frame 0 is the ground truth
    # a complete sequence is not recomputed (resume)
    stamp = (out / "square" / "00003.png").stat().st_mtime_ns
    r = eval_cli(tmp_path, "davis", "tiny.pth", "--davis", "DAVIS", "--device", "cpu")
    assert r.returncode == 0, r.stderr
    assert (out / "square" / "00003.png").stat().st_mtime_ns == stamp
    # --eval-only on the ground truth itself: J = F = 1
    gt = tmp_path / "gt_results"
    shutil.copytree(tmp_path / "DAVIS" / "Annotations" / "480p", gt)
    r = eval_cli(tmp_path, "davis", "--davis", "DAVIS", "--eval-only", gt, "--out", "scored", "--json")
    assert r.returncode == 0, r.stderr
    scored = json.loads((tmp_path / "scored" / "metrics.json").read_text())
    assert scored["J&F-Mean"] == 1 and scored["J-Recall"] == 1 and scored["F-Decay"] == 0
    # another checkpoint into the same folder is refused
    tiny_checkpoint(tmp_path / "other.pth", seed=1)
    r = eval_cli(tmp_path, "davis", "other.pth", "--davis", "DAVIS", "--device", "cpu")
    assert r.returncode == 2 and "another run" in r.stderr


def test_davis_bad_layouts_one_line_exit_2(tmp_path):
    frames, labels = square_frames(4, 64, 96, side=16, step=4)
    root = write_davis(tmp_path / "D", "sq", frames, labels)
    tiny_checkpoint(tmp_path / "tiny.pth")

    def bad(*args, expect):
        r = eval_cli(tmp_path, "davis", "tiny.pth", "--device", "cpu", "--quiet", *args)
        assert r.returncode == 2, r.stderr
        assert expect in r.stderr and "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1

    r = eval_cli(tmp_path, "davis", "--davis", "D", "--eval-only", "nothing_here")
    assert r.returncode == 2 and "--eval-only" in r.stderr
    bad("--davis", "D", "--split", "train", expect="split file missing")
    bad("--davis", tmp_path, expect="no JPEGImages/480p")
    (root / "Annotations" / "480p" / "sq" / "00009.png").write_bytes(
        (root / "Annotations" / "480p" / "sq" / "00001.png").read_bytes())
    bad("--davis", "D", expect="frame/annotation mismatch")
    (root / "Annotations" / "480p" / "sq" / "00009.png").unlink()
    (root / "Annotations" / "480p" / "sq" / "00002.png").unlink()
    bad("--davis", "D", expect="give --no-score")
    r = eval_cli(tmp_path, "davis", "tiny.pth", "--device", "cpu", "--quiet", "--davis", "D", "--no-score",
                 "--short-side", "64", "--out", "ns")
    assert r.returncode == 0, r.stderr
    assert len(list((tmp_path / "ns" / "sq").glob("*.png"))) == 4
    assert json.loads((tmp_path / "ns" / "metrics.json").read_text())["scored"] is False
    (root / "Annotations" / "480p" / "sq" / "00000.png").unlink()
    bad("--davis", "D", expect="first frame's annotation is missing")
