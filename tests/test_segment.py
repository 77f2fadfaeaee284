"""`dora-eval segment`: mmseg's mIoU/aAcc against a direct count, a generated ADE20K-layout set learned by the
linear probe, exact resumption after kill -9, and one-line errors for bad folders."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from PIL import Image

from bench.make_seg_example import make_example
from dora.eval import SegScores, intersect_and_union
from dora.eval.seg_metrics import IGNORE
from dora.eval.segment import dense_features, poly_lr
from tests.conftest import kill_when, run_entry, start_cli
from tests.evaldata import tiny_checkpoint

FAST = ["--crop", "64", "--batch-size", "8", "--workers", "0", "--device", "cpu", "--quiet"]


def direct_count(pairs: list[tuple[np.ndarray, np.ndarray]], num_classes: int) -> dict:
    """mIoU / mAcc / aAcc (%) by counting pixels one by one, areas summed over the whole set first."""
    inter, pred_a, lab_a = [0] * num_classes, [0] * num_classes, [0] * num_classes
    for pred, lab in pairs:
        for p, t in zip(pred.ravel().tolist(), lab.ravel().tolist(), strict=True):
            if t == IGNORE:
                continue
            pred_a[p] += 1
            lab_a[t] += 1
            inter[t] += p == t
    ious = [inter[c] / (pred_a[c] + lab_a[c] - inter[c]) for c in range(num_classes) if pred_a[c] + lab_a[c]]
    accs = [inter[c] / lab_a[c] for c in range(num_classes) if lab_a[c]]
    return {"mIoU": 100 * sum(ious) / len(ious), "mAcc": 100 * sum(accs) / len(accs),
            "aAcc": 100 * sum(inter) / sum(lab_a), "n": len(ious)}


def test_miou_and_pixel_accuracy_are_mmsegs_counts():
    # 5 classes: 0 and 1 everywhere, 2 labelled but never predicted (IoU 0), 3 predicted but never
    # labelled (IoU 0, no Acc), 4 in neither (NaN: left out of the means); 255 pixels ignored
    lab1 = np.array([[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, IGNORE, IGNORE], [2, 2, IGNORE, IGNORE]])
    pred1 = np.array([[0, 0, 1, 0], [0, 1, 1, 1], [0, 1, 4, 3], [1, 0, 2, 2]])  # the ignored ones predict 4, 3, 2
    lab2 = np.array([[1, 1, 1, 0], [IGNORE, 1, 0, 0]])
    pred2 = np.array([[1, 1, 3, 0], [0, 1, 0, 1]])
    sc = SegScores(5)
    for p, t in ((pred1, lab1), (pred2, lab2)):
        sc.add(torch.from_numpy(p), torch.from_numpy(t))
    r = sc.result(["a", "b", "c", "d", "e"])
    want = direct_count([(pred1, lab1), (pred2, lab2)], 5)
    # by hand: class 0: I 5, pred 8, label 7 -> 5/10; class 1: I 6, pred 10, label 8 -> 6/12; class 2: 0/4;
    # class 3: 0/1 (only predicted); 19 labelled pixels, 11 right
    assert math.isclose(r["mIoU"], 100 * (5 / 10 + 6 / 12 + 0 + 0) / 4) and math.isclose(r["mIoU"], want["mIoU"])
    assert math.isclose(r["mAcc"], 100 * (5 / 7 + 6 / 8 + 0) / 3) and math.isclose(r["mAcc"], want["mAcc"])
    assert math.isclose(r["aAcc"], 100 * 11 / 19) and math.isclose(r["aAcc"], want["aAcc"])
    assert r["n_classes_scored"] == 4 == want["n"]
    assert r["per_class"]["c"] == {"IoU": 0.0, "Acc": 0.0, "label_px": 4, "pred_px": 0}
    assert r["per_class"]["d"] == {"IoU": 0.0, "Acc": None, "label_px": 0, "pred_px": 1}
    assert "e" not in r["per_class"]  # absent from both: no IoU
    # summed over the set, not averaged per image
    per_image = [SegScores(5) for _ in range(2)]
    for s, (p, t) in zip(per_image, ((pred1, lab1), (pred2, lab2)), strict=True):
        s.add(torch.from_numpy(p), torch.from_numpy(t))
    assert not math.isclose(r["mIoU"], sum(s.result()["mIoU"] for s in per_image) / 2)
    assert intersect_and_union(torch.from_numpy(pred2), torch.from_numpy(lab2), 5).tolist() == [
        [2, 3, 0, 0, 0], [3, 5, 0, 1, 0], [2, 4, 0, 1, 0], [3, 4, 0, 0, 0]]  # intersection, union, pred, label


def test_random_masks_agree_with_the_direct_count():
    rng = np.random.default_rng(0)
    pairs = []
    for _ in range(3):
        lab = rng.integers(0, 6, (9, 13))
        lab[rng.random(lab.shape) < 0.2] = IGNORE
        pairs.append((rng.integers(0, 6, (9, 13)), lab))
    sc = SegScores(7)  # class 6: never seen
    for p, t in pairs:
        sc.add(torch.from_numpy(p), torch.from_numpy(t))
    r, want = sc.result(), direct_count(pairs, 7)
    assert all(math.isclose(r[k], want[k]) for k in ("mIoU", "mAcc", "aAcc")) and r["n_classes_scored"] == 6


def test_schedule_and_features_follow_dinov2():
    """mmcv's poly (power 1) with linear warm-up from 1e-6; last4 = per block, patch tokens then [CLS]."""
    assert math.isclose(poly_lr(1e-3, 0, 40000, 1500), 1e-9)
    assert math.isclose(poly_lr(1e-3, 750, 40000, 1500), 1e-3 * (1 - 750 / 40000) * (0.5 + 0.5e-6))
    assert math.isclose(poly_lr(1e-3, 1500, 40000, 1500), 1e-3 * (1 - 1500 / 40000))
    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", num_classes=0, depth=4, dynamic_img_size=True).eval()
    x = torch.randn(2, 3, 64, 48)
    with torch.no_grad():
        f4, f1 = dense_features(model, x, "last4"), dense_features(model, x, "last")
        tokens = model.forward_features(x)  # the last block after the final norm
    assert f4.shape == (2, 8 * 192, 4, 3) and f1.shape == (2, 192, 4, 3)
    assert dense_features(model, x, "last4-patch").shape == (2, 4 * 192, 4, 3)
    assert torch.allclose(f1, tokens[:, 1:].transpose(1, 2).reshape(2, 192, 4, 3), atol=1e-5)
    assert torch.allclose(f4[:, 6 * 192:7 * 192], f1, atol=1e-5)  # last block's patches, then its [CLS]
    assert torch.allclose(f4[:, 7 * 192:], tokens[:, 0, :, None, None].expand(-1, -1, 4, 3), atol=1e-5)


def test_the_probe_learns_a_generated_ade20k_set_from_a_fresh_folder(tmp_path):
    """Relative paths, the default --out: >= 90 % mIoU on flat-colour regions on the patch grid."""
    make_example(tmp_path / "data", n_train=24, n_val=8, size=64)
    tiny_checkpoint(tmp_path / "tiny.pth")
    r = run_entry("dora-eval", "segment", "tiny.pth", "--data", "data", *FAST, "--iters", "60", "--lr", "0.01",
                  cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    out = tmp_path / "runs" / "eval" / "segment"
    m = json.loads((out / "metrics.json").read_text())
    assert m["task"] == "segment" and m["layout"] == "ade20k" and m["num_classes"] == 150
    assert m["results"]["mIoU"] >= 90.0, m["results"]
    assert m["results"]["n_classes_scored"] == 6 and set(m["per_class"]) == {"wall", "building", "sky", "floor",
                                                                             "tree", "road"}
    assert m["params"]["iters"] == 60 and m["params"]["warmup_iters"] == 2 and m["params"]["stride"] == 42
    assert len(m["checkpoint_sha256"]) == 64 and m["pos_embed_interpolation"] == "dino"
    assert f"mIoU {m['results']['mIoU']:.2f}" in r.stdout
    with Image.open(out / "segment_sheet.png") as im:
        assert im.width >= 600 and im.height >= 6 * 200
    assert [h["iter"] for h in map(json.loads, (out / "metrics.jsonl").read_text().splitlines())] == [60]


def generic_folder(ade: Path, root: Path) -> Path:
    """The ADE20K-layout set `ade` rewritten in the generic layout (classes.txt, 255 = ignore)."""
    names = ["wall", "building", "sky", "floor", "tree", "ceiling", "road"]
    (root).mkdir(parents=True)
    (root / "classes.txt").write_text("\n".join(names) + "\n")
    for src, dst in (("training", "train"), ("validation", "val")):
        (root / "images" / dst).mkdir(parents=True)
        (root / "annotations" / dst).mkdir(parents=True)
        for img in sorted((ade / "images" / src).glob("*.jpg")):
            (root / "images" / dst / img.name).write_bytes(img.read_bytes())
            lab = np.array(Image.open(ade / "annotations" / src / f"{img.stem}.png")).astype(np.int64) - 1
            lab[lab < 0] = IGNORE
            Image.fromarray(lab.astype(np.uint8)).save(root / "annotations" / dst / f"{img.stem}.png")
    return root


def _history(out: Path) -> list[dict]:
    return [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]


def test_kill_9_then_rerun_ends_with_the_uninterrupted_numbers(tmp_path):
    ade = make_example(tmp_path / "ade", n_train=16, n_val=4, size=64)
    generic_folder(ade, tmp_path / "folder")
    tiny_checkpoint(tmp_path / "tiny.pth")
    # --crop 60: inputs padded to the patch grid and logits cropped back
    args = ["segment", "tiny.pth", "--data", "folder", *FAST, "--crop", "60", "--iters", "40", "--save-every", "4"]
    r = run_entry("dora-eval", *args, "--out", "ref", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    proc = start_cli("dora-eval", *args, "--out", "killed", cwd=tmp_path)
    log = tmp_path / "killed" / "metrics.jsonl"
    kill_when(proc, lambda: log.exists() and len(log.read_text().splitlines()) >= 2)
    done = _history(tmp_path / "killed")[-1]["iter"]
    assert 8 <= done < 40 and not (tmp_path / "killed" / "metrics.json").exists()
    other = [*args, "--workers", "1", "--save-every", "6"]  # numbers do not depend on them: may change
    r = run_entry("dora-eval", *other, "--out", "killed", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert f"resuming after iteration {done}" in r.stderr or f"resuming after iteration {done + 4}" in r.stderr
    ref = json.loads((tmp_path / "ref" / "metrics.json").read_text())
    got = json.loads((tmp_path / "killed" / "metrics.json").read_text())
    assert got["results"] == ref["results"] and got["per_class"] == ref["per_class"]
    before = [h for h in _history(tmp_path / "killed") if h["iter"] <= done]
    assert before == [h for h in _history(tmp_path / "ref") if h["iter"] <= done]  # identical floats
    assert _history(tmp_path / "killed")[-1]["iter"] == 40
    assert ref["layout"] == "folder" and ref["num_classes"] == 7
    assert len(ref["per_class"]) >= 3 and set(ref["per_class"]) <= {"wall", "building", "sky", "floor", "tree",
                                                                     "road"}
    # another setting is refused in one line; --restart starts again
    r = run_entry("dora-eval", *[a if a != "40" else "44" for a in args], "--out", "killed", cwd=tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    line = r.stderr.strip().splitlines()[-1]
    assert line.startswith("error:") and "iters: 40 -> 44" in line and "--restart" in line, line
    r = run_entry("dora-eval", *[a if a != "40" else "4" for a in args], "--out", "killed", "--restart", cwd=tmp_path)
    assert r.returncode == 0 and "resuming" not in r.stderr, r.stderr
    assert [h["iter"] for h in _history(tmp_path / "killed")] == [4]


def _bad_layouts(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    """Folders with one fault each, and a word the error line must hold."""
    cases = {}
    ade = make_example(tmp_path / "no_val", n_train=2, n_val=1, size=32)
    for f in (ade / "images" / "validation").iterdir():
        f.unlink()
    (ade / "images" / "validation").rmdir()
    cases["missing split"] = (tmp_path / "no_val", "images/validation: missing")
    ade = make_example(tmp_path / "no_ann", n_train=2, n_val=1, size=32)
    (ade / "annotations" / "training" / "ADE_train_00000002.png").unlink()
    cases["no annotation"] = (tmp_path / "no_ann", "ADE_train_00000002.jpg: no annotation")
    ade = make_example(tmp_path / "range", n_train=2, n_val=1, size=32)
    for p in (ade / "annotations" / "training").iterdir():
        Image.fromarray(np.full((32, 32), 200, np.uint8)).save(p)
    cases["ade label out of range"] = (tmp_path / "range", "label value 200 is outside 0..150")
    generic = generic_folder(make_example(tmp_path / "g", n_train=2, n_val=1, size=32), tmp_path / "generic")
    (generic / "classes.txt").write_text("wall\nbuilding\n")
    cases["folder label out of range"] = (generic, "outside 0..1 (classes.txt lists 2)")
    ade = make_example(tmp_path / "unreadable", n_train=2, n_val=1, size=32)
    for p in (ade / "images" / "training").iterdir():
        p.write_bytes(b"not a jpeg")
    cases["unreadable image"] = (tmp_path / "unreadable", "not a readable image")
    nocls = generic_folder(make_example(tmp_path / "h", n_train=2, n_val=1, size=32), tmp_path / "nocls")
    (nocls / "classes.txt").unlink()
    cases["no classes.txt"] = (nocls, "classes.txt: missing")
    return cases


@pytest.mark.parametrize("case", ["missing split", "no annotation", "ade label out of range",
                                  "folder label out of range", "unreadable image", "no classes.txt"])
def test_a_bad_folder_is_one_line(tmp_path, case):
    folder, words = _bad_layouts(tmp_path)[case]
    tiny_checkpoint(tmp_path / "tiny.pth")
    r = run_entry("dora-eval", "segment", "tiny.pth", "--data", folder, "--crop", "32", "--batch-size", "2",
                  "--workers", "0", "--iters", "2", "--quiet", "--out", tmp_path / "out", cwd=tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and words in lines[0], r.stderr
