"""`dora-data analyze` with the open-vocabulary back-end (OWLv2 / OWL-ViT via transformers), datasets side by side.

Everything runs offline: a tiny randomly initialised model built from transformers' own config classes
stands in for the published weights, so the tests check the code path (scores, boxes, counts, schema,
caching, figure data), not detection quality.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pipeline.analyze.owl import OwlDetector
from pipeline.analyze.vocabulary import load_vocabulary, parse_names
from tests.conftest import ROOT
from tests.tiny_owl import build_tiny_owl
from tests.videos import decode_all


def dora_data(cwd: Path, *args, env: dict | None = None) -> subprocess.CompletedProcess:
    """`dora-data ARGS` typed in folder `cwd` (relative paths, default output folders)."""
    e = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "pipeline.cli", *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, timeout=600, env=e)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny_owl")
    return {k: build_tiny_owl(root / k, k) for k in ("owlv2", "owlvit")}


def frames_of(path: Path, n: int = 3) -> list[np.ndarray]:
    _, frames = decode_all(path)
    return [frames[i] for i in np.linspace(0, len(frames) - 1, n).astype(int)]


@pytest.mark.parametrize("kind", ["owlv2", "owlvit"])
def test_detections_equal_the_library_forward_pass(tiny, kind, bikes, tmp_path, monkeypatch):
    """Our chunked max over cached text embeddings + boxes in frame pixels + NMS equal the library's own
    forward pass (text and image together) followed by its post-processing and the same NMS."""
    from torchvision.ops import nms

    monkeypatch.setattr("pipeline.analyze.owl.QUERY_CHUNK", 7)  # 80 classes: 12 chunks to merge
    monkeypatch.setattr("pipeline.analyze.owl.TEXT_BATCH", 16)  # text embeddings in 5 batches

    vocab = load_vocabulary("coco")
    det = OwlDetector(str(tiny[kind]), vocab, threshold=0.3, nms_iou=0.5, cache_dir=tmp_path)
    frames = frames_of(bikes)
    got = det.detect(frames)
    prompts = [f"a photo of a {c}" for c in vocab.classes]
    tok = det.tokenizer(prompts, padding="max_length", truncation=True, max_length=16, return_tensors="pt")
    pv = det.processor(images=frames, return_tensors="pt")["pixel_values"]
    n_found = 0
    for k, frame in enumerate(frames):
        h, w = frame.shape[:2]
        with torch.inference_mode():
            out = det.model(input_ids=tok["input_ids"], attention_mask=tok["attention_mask"], pixel_values=pv[k:k + 1])
        side = (max(h, w), max(h, w)) if kind == "owlv2" else (h, w)  # OWLv2 boxes are relative to the padded square
        ref = det.processor.post_process_object_detection(out, threshold=0.3, target_sizes=[side])[0]
        boxes = ref["boxes"].clone()
        boxes[:, 0::2] = boxes[:, 0::2].clamp(0, w)
        boxes[:, 1::2] = boxes[:, 1::2].clamp(0, h)
        keep = nms(boxes, ref["scores"], 0.5)
        want = sorted((vocab.classes[int(ref["labels"][i])], float(ref["scores"][i])) for i in keep)
        mine = sorted((d.label, d.score) for d in got[k])
        assert [x[0] for x in mine] == [x[0] for x in want]
        assert np.allclose([x[1] for x in mine], [x[1] for x in want], atol=2e-4)
        for d in got[k]:
            x0, y0, x1, y1 = d.box
            assert 0 <= x0 <= x1 <= w and 0 <= y0 <= y1 <= h
        n_found += len(got[k])
    assert n_found > 0  # the tiny model's heads are scaled so that scores spread around the threshold


def test_text_embeddings_computed_once_and_cached(tiny, tmp_path):
    coco = load_vocabulary("coco")
    first = OwlDetector(str(tiny["owlv2"]), coco, cache_dir=tmp_path)
    files = list((tmp_path / "text-embeddings").glob("*.pt"))
    assert not first.text_from_cache and len(files) == 1
    again = OwlDetector(str(tiny["owlv2"]), coco, cache_dir=tmp_path)
    assert again.text_from_cache and torch.equal(again.text, first.text)
    assert torch.allclose(first.text, first.embed_text(list(coco.classes)), atol=1e-6)
    other = OwlDetector(str(tiny["owlv2"]), parse_names(["cat", "dog"], "mine"), cache_dir=tmp_path)
    assert not other.text_from_cache and other.text.shape[0] == 2  # another vocabulary: another key
    owlvit = OwlDetector(str(tiny["owlvit"]), coco, cache_dir=tmp_path)
    assert not owlvit.text_from_cache  # another model: another key
    assert len(list((tmp_path / "text-embeddings").glob("*.pt"))) == 3
    files[0].write_bytes(b"damaged")
    redo = OwlDetector(str(tiny["owlv2"]), coco, cache_dir=tmp_path)
    assert not redo.text_from_cache and torch.equal(redo.text, first.text)


def test_vocabulary_files_and_builtins(tmp_path):
    v = parse_names(["# my classes", "", "  red   car ", "Red Car", "bus", "bus", "tram"], "f")
    assert v.classes == ("red car", "bus", "tram") and v.merged == 2
    assert len(load_vocabulary("lvis").classes) == 1203 and len(load_vocabulary("coco").classes) == 80
    in21k = load_vocabulary("in21k")
    assert len(in21k.classes) + in21k.merged == 21843 and len(in21k.classes) > 20000
    assert "aerosol can" in load_vocabulary("lvis").classes and "person" in load_vocabulary("coco").classes


def test_vocabulary_errors_are_one_line(tmp_path, carphone, tiny):
    (tmp_path / "empty.txt").write_text("# nothing here\n\n")
    (tmp_path / "latin1.txt").write_bytes("caf\xe9\n".encode("latin-1"))
    for vocab, words in [("empty.txt", "no class names"), ("latin1.txt", "not UTF-8"), ("nope.txt", "no such file")]:
        r = dora_data(tmp_path, "analyze", carphone, "--detector", "owlv2", "--model", tiny["owlv2"],
                      "--vocabulary", vocab, "--cache-dir", "cache", "--quiet")
        assert r.returncode == 2 and words in r.stderr and vocab in r.stderr, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
    assert not (tmp_path / "runs" / "analysis" / "analysis.json").exists()


def test_offline_without_cached_weights(tmp_path, carphone):
    """--offline with an empty Hugging Face cache: one line naming the model and how to fetch it, exit 2."""
    env = {"HF_HOME": str(tmp_path / "hf"), "HF_HUB_CACHE": str(tmp_path / "hf" / "hub"), "HF_HUB_OFFLINE": "0"}
    r = dora_data(tmp_path, "analyze", carphone, "--detector", "owlv2", "--offline", "--quiet", env=env)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
    assert "google/owlv2-base-patch16-ensemble" in r.stderr and "--offline forbids downloading" in r.stderr
    assert "hf download google/owlv2-base-patch16-ensemble" in r.stderr and str(tmp_path / "hf" / "hub") in r.stderr
    out = tmp_path / "runs" / "analysis"
    assert not out.exists() or not any(out.iterdir())


def _images_folder(src: Path, folder: Path, n: int) -> Path:
    folder.mkdir(parents=True)
    for i, f in enumerate(frames_of(src, n)):
        Image.fromarray(f).save(folder / f"img_{i:03d}.jpg", quality=90)
    return folder


def test_side_by_side_with_labels_minutes_and_image_folder(tmp_path, tiny, bikes, carphone, bbb):
    """Three datasets (two videos and a folder of images) labelled, first 6 s of each: per-input
    counts agree with detections.csv, and the figure has one labelled curve per input."""
    _images_folder(bbb, tmp_path / "stills", 5)
    (tmp_path / "vocab.txt").write_text("# street things\nperson\ncar\nbicycle\ntree\nsky\nbuilding\nface\ndog\n")
    (tmp_path / "labels.csv").write_text(f"path,label\n{carphone},Phone call\n")
    r = dora_data(tmp_path, "analyze", "--label", f"WT walk={bikes}", "--label", "labels.csv",
                  "--label", "Image set=stills", "--minutes", "0.1", "--fps", "2", "--detector", "owlv2",
                  "--model", tiny["owlv2"], "--vocabulary", "vocab.txt", "--threshold", "0.3", "--batch", "3",
                  "--cache-dir", "cache", "--quiet")
    assert r.returncode == 0, r.stderr
    assert "shorter than --minutes" in r.stderr and "stills" in r.stderr  # 5 images at 2/s = 2.5 s < 6 s
    out = tmp_path / "runs" / "analysis"
    meta = json.loads((out / "analysis.json").read_text())
    assert meta["schema"] == 2 and meta["vocabulary"]["name"] == "vocab.txt" and meta["vocabulary"]["size"] == 8
    assert meta["detector"].startswith("OWLv2") and meta["settings"]["minutes"] == 0.1
    assert [v["label"] for v in meta["videos"]] == ["WT walk", "Phone call", "Image set"]
    rows = defaultdict(list)
    with open(out / "detections.csv") as f:
        for row in csv.DictReader(f):
            rows[row["video"]].append(row)
    vocab = set(load_vocabulary(str(tmp_path / "vocab.txt")).classes)
    for v in meta["videos"]:
        assert v["unique_classes"] == len(v["classes"]) and set(v["classes"]) <= vocab
        det_rows = rows[v["name"]]
        assert Counter(x["class"] for x in det_rows) == Counter(v["classes"])
        per_t = defaultdict(list)
        for x in det_rows:
            per_t[round(float(x["t_s"]), 6)].append(x["class"])
        assert v["objects"]["count"] == [len(per_t[t]) for t in v["objects"]["t"]]
        assert v["objects"]["unique"] == [len(set(per_t[t])) for t in v["objects"]["t"]]
        assert len(v["objects"]["t"]) == len(v["lightness"]["L"])
    walk, phone, stills = meta["videos"]
    assert walk["duration_s"] == pytest.approx(6.0, abs=0.05) and max(walk["lightness"]["t"]) < 6.0
    assert len(walk["lightness"]["t"]) == 12 and walk["cuts_s"] == pytest.approx([1.2, 3.04, 5.48], abs=0.05)
    assert stills["kind"] == "images" and len(stills["lightness"]["t"]) == 5 and stills["shots"] == 5
    assert not walk["shorter_than_minutes"] and stills["shorter_than_minutes"]
    assert sum(v["unique_classes"] for v in meta["videos"]) > 0

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from pipeline.analyze.report import draw_panel

    for panel in ("lightness", "objects", "classes"):
        fig, ax = plt.subplots()
        draw_panel(ax, panel, meta["videos"])
        legend = [t.get_text() for t in ax.get_legend().get_texts()]
        assert len(ax.get_lines()) == 3 and len(legend) == 3
        if panel == "lightness":
            assert legend == ["WT walk", "Phone call", "Image set"]
        else:
            assert legend == [f"{v['label']} ({v['unique_classes']} classes)" for v in meta["videos"]]
        if panel == "objects":
            assert [list(ln.get_ydata()) for ln in ax.get_lines()] == [v["objects"]["unique"] for v in meta["videos"]]
        plt.close(fig)
    with Image.open(out / "figure.png") as im:
        assert im.size == (1200, 800)
    with Image.open(out / "detections.png") as im:  # one example frame with its boxes per input: 3 columns
        assert im.format == "PNG" and im.size == (1500, 340)


def test_input_errors_are_one_line(tmp_path, bikes, carphone):
    r = dora_data(tmp_path, "analyze", "--label", f"same={bikes}", "--label", f"same={carphone}", "--quiet")
    assert r.returncode == 2 and "same label 'same'" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    (tmp_path / "bad.csv").write_text(f"{bikes},a,b\n")
    r = dora_data(tmp_path, "analyze", "--label", "bad.csv", "--quiet")
    assert r.returncode == 2 and "bad.csv: line 1 has 3 fields" in r.stderr
    r = dora_data(tmp_path, "analyze", "--quiet")
    assert r.returncode == 2 and "no input" in r.stderr
    shots = tmp_path / "shots"
    shots.mkdir()
    Image.new("RGB", (64, 48), (120, 90, 60)).save(shots / "a.png")
    (shots / "b.jpg").write_bytes(b"not a jpeg")
    r = dora_data(tmp_path, "analyze", "shots", "--quiet")
    assert r.returncode == 2 and "shots/b.jpg: not a readable image" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and not (tmp_path / "runs" / "analysis" / "analysis.json").exists()
