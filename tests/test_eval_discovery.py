"""`dora-eval discovery`: LOST on keys with a known answer, CorLoc and the attention Jaccard through the
command on generated VOC folders, resume, and bad layouts."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from dora.eval.discovery import attention_masks, box_iou, jaccard_image, keep_mass
from dora.eval.lost import lost
from tests.evaldata import tiny_checkpoint, voc_xml, write_voc
from tests.test_eval_davis import eval_cli


def test_lost_seed_expansion_and_component_on_known_keys():
    # 8x10 grid. Background keys b; object A (4x4) and B (2x2) share a direction, C (1x3) correlates
    # with A only. Positive correlations per patch: C 2+16 = 18 < B 3+16 = 19 < A 15+4+3 = 22 < background.
    h, w = 8, 10
    b, ka, kb, kc = (torch.tensor(v) for v in ([1.0, 0, 0], [-0.2, 1, 0], [-0.2, 0.8, 0.6], [-0.2, 0.5, -0.8]))
    keys = b.repeat(h, w, 1)
    keys[1:5, 1:5], keys[5:7, 7:9], keys[0, 7:10] = ka, kb, kc
    res = lost(keys.reshape(h * w, 3), (h, w), 16, (120, 150))
    assert res.seed == 7  # C's first patch (row 0, col 7): the fewest positive correlations, ties by index
    assert int(res.degree[7]) == 18 and int(res.degree[5 * w + 7]) == 19 and int(res.degree[w + 1]) == 22
    # the expansion's score is positive on A, B and C, three separate components: the box is C's,
    # scaled by the patch and clipped to the 150 px wide image
    assert res.mask.sum() == 3 and res.mask[0, 7:10].all()
    assert res.box.tolist() == [112, 0, 150, 16]
    # a seed touching A: the component grows to both
    keys[0, 1:4] = kc
    keys[0, 7:10] = b
    res = lost(keys.reshape(h * w, 3), (h, w), 16, (128, 160))
    assert res.box.tolist() == [16, 0, 80, 80]


def test_iou_and_mass_threshold():
    assert box_iou(np.array([0, 0, 10, 10]), np.array([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30]])) == \
        pytest.approx([1, 50 / 150, 0], abs=1e-6)
    attn = torch.tensor([[0.1, 0.5, 0.15, 0.25]])
    assert keep_mass(attn, 0.6).tolist() == [[False, True, False, True]]  # 0.5 + 0.25 reach 60 %
    assert keep_mass(attn, 0.8).tolist() == [[False, True, True, True]]


def test_attention_jaccard_mean80_and_heads60():
    # 4x4 patches; head 0 attends to the top-left 2x2 block, head 1 to the bottom row. Mean: 8 patches of
    # 0.55 and 8 of 0.1 (85 % vs 15 % of the mass): 80 % needs all 8, none of the rest
    a0 = torch.full((4, 4), 0.1)
    a0[:2, :2] = 1
    a1 = torch.full((4, 4), 0.1)
    a1[3] = 1
    attn = torch.stack([a0, a1]).reshape(2, 16)
    labels = np.zeros((4, 4), np.uint8)
    labels[:2, :2] = 1
    labels[3, :] = 2
    labels[2, 0] = 255  # void: in neither intersection nor union
    m = attention_masks(attn, "mean80").reshape(-1, 4, 4).numpy()
    assert m.shape[0] == 1 and m[0, :2, :2].all() and m[0, 3].all() and not m[0, 2].any()
    assert jaccard_image(m, labels, "mean80") == pytest.approx(1.0)
    heads = attention_masks(attn, "heads60").reshape(-1, 4, 4).numpy()
    assert heads.shape[0] == 2 and jaccard_image(heads, labels, "heads60") == pytest.approx(1.0)
    labels[3, :] = 0  # class 2 gone: mean80's mask now also covers the background row
    assert jaccard_image(m, labels, "mean80") == pytest.approx(4 / 8)
    assert jaccard_image(heads, labels, "heads60") == pytest.approx(1.0)  # head 0 alone fits class 1
    assert jaccard_image(m, np.zeros((4, 4), np.uint8), "mean80") is None


def test_corloc_on_generated_voc_through_the_cli(tmp_path):
    ids = write_voc(tmp_path / "voc", 2007, 5)
    tiny_checkpoint(tmp_path / "tiny.pth")
    r = eval_cli(tmp_path, "discovery", "tiny.pth", "--voc", "voc", "--year", "2007", "--device", "cpu")
    assert r.returncode == 0, r.stderr
    out = tmp_path / "runs" / "eval" / "discovery"
    boxes = json.loads((out / "boxes.json").read_text())
    assert list(boxes) == ids
    with Image.open(out / "corloc_sheet.png") as im:
        assert im.format == "PNG" and im.height > 2 * 160  # two rows of tiles and the legend
    # Ground truth made from the predictions: exact (hit), shifted by w/4 (IoU 0.6, hit), by w/2 (IoU 1/3,
    # miss), far away (miss), and far away + exact as a second box (hit: any box counts). VOC's XML is
    # 1-based inclusive, so xmin = x1 + 1.
    preds = [boxes[i]["pred"] for i in ids]
    voc2 = tmp_path / "voc2"
    shutil.copytree(tmp_path / "voc", voc2)

    def xml(*bs):
        return voc_xml([(int(x1) + 1, int(y1) + 1, int(x2), int(y2)) for x1, y1, x2, y2 in bs], (96, 128))

    far = (200, 200, 240, 240)
    for i, (iid, (x1, y1, x2, y2)) in enumerate(zip(ids, preds, strict=True)):
        wd = x2 - x1
        gts = [[(x1, y1, x2, y2)], [(x1 + wd / 4, y1, x2 + wd / 4, y2)], [(x1 + wd / 2, y1, x2 + wd / 2, y2)],
               [far], [far, (x1, y1, x2, y2)]][i]
        assert wd % 4 == 0
        (voc2 / "VOC2007" / "Annotations" / f"{iid}.xml").write_text(xml(*gts))
    r = eval_cli(tmp_path, "discovery", "tiny.pth", "--voc", "voc2", "--year", "2007", "--device", "cpu",
                 "--out", "d2", "--json", "--quiet")
    assert r.returncode == 0, r.stderr
    data = json.loads((tmp_path / "d2" / "metrics.json").read_text())
    assert data["corloc"] == {"corloc": 60.0, "n_correct": 3, "n_images": 5}
    assert data["params"]["k_patches"] == 100 and data["jaccard"]["ran"] is False
    b2 = json.loads((tmp_path / "d2" / "boxes.json").read_text())
    assert [b2[i]["correct"] for i in ids] == [True, True, False, False, True]
    assert b2[ids[1]]["iou"][0] == pytest.approx(0.6, abs=1e-3)
    # resume: keep 2 finished images and a torn line, rerun -> the same boxes, nothing duplicated
    log = tmp_path / "d2" / "corloc.jsonl"
    lines = log.read_text().splitlines()
    log.write_text("\n".join(lines[:3]) + "\n" + lines[3][:20])
    r = eval_cli(tmp_path, "discovery", "tiny.pth", "--voc", "voc2", "--year", "2007", "--device", "cpu",
                 "--out", "d2", "--quiet")
    assert r.returncode == 0, r.stderr
    assert len(log.read_text().splitlines()) == 6
    assert json.loads((tmp_path / "d2" / "boxes.json").read_text()) == b2


def test_jaccard_through_the_cli_and_bad_layouts(tmp_path):
    write_voc(tmp_path / "VOCdevkit", 2012, 3, segmentation=True)
    tiny_checkpoint(tmp_path / "tiny.pth")
    r = eval_cli(tmp_path, "discovery", "tiny.pth", "--voc", "VOCdevkit", "--device", "cpu", "--json",
                 "--jaccard-mask", "heads60")
    assert r.returncode == 0, r.stderr
    data = json.loads((tmp_path / "runs" / "eval" / "discovery" / "metrics.json").read_text())
    j = data["jaccard"]
    assert j["jaccard_mask"] == "heads60" and j["n_images"] == 3 and 0 <= j["jaccard"] <= 100
    assert data["params"]["year"] == 2012 and data["corloc"]["n_images"] == 3

    def bad(*args, expect):
        r = eval_cli(tmp_path, "discovery", "tiny.pth", "--device", "cpu", "--quiet", *args)
        assert r.returncode == 2, r.stderr
        assert expect in r.stderr and "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1

    bad("--voc", "VOCdevkit", "--set", "trainval", expect="image-set file missing")
    bad("--voc", "VOCdevkit", "--year", "2007", "--jaccard", expect="--year 2012")
    voc = tmp_path / "VOCdevkit" / "VOC2012"
    next(iter((voc / "SegmentationClass").iterdir())).unlink()
    bad("--voc", "VOCdevkit", expect="listed in ImageSets/Segmentation/val.txt but missing")
    next(iter((voc / "Annotations").iterdir())).unlink()
    bad("--voc", "VOCdevkit", "--no-jaccard", expect="annotation missing")
