"""`dora-eval knn`: DINO's weighted k-NN, image-folder labels, DINO-format dumps, DALI vs torchvision."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from dora.checkpoint import save_atomic
from dora.config import load_config
from dora.eval.features import block_outputs, cls_feature, last_blocks_feature
from dora.eval.images import dali_batches, eval_transform, load_layout, torch_batches
from dora.eval.knn import knn_classify
from dora.model.vit import create_backbone, use_dino_pos_embed
from tests.conftest import ROOT
from tests.imagefolders import make_folder

SMOKE = ROOT / "configs" / "smoke.yaml"


def eval_cli(*args, cwd: Path) -> subprocess.CompletedProcess:
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}
    return subprocess.run([sys.executable, "-m", "dora.eval_cli", *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, timeout=600, env=env)


def tiny_backbone(seed: int = 0):
    torch.manual_seed(seed)
    return create_backbone(load_config(SMOKE).model).eval()


def official_style_checkpoint(path: Path, seed: int = 0) -> Path:
    """A DINO-style file ({"teacher": {"backbone.*": ...}}) holding a tiny ViT (vit_tiny, depth 2)."""
    m = tiny_backbone(seed)
    save_atomic({"teacher": {f"backbone.{k}": v for k, v in m.state_dict().items()}}, path)
    return path


def brute_force_knn(train_f, train_l, test_f, test_l, k, T, num_classes):
    """DINO's formula written out image by image: k most similar train images vote exp(sim/T)."""
    top1 = top5 = 0
    for x, y in zip(test_f.tolist(), test_l.tolist(), strict=True):
        sims = [sum(a * b for a, b in zip(x, t, strict=True)) for t in train_f.tolist()]
        order = sorted(range(len(sims)), key=lambda j: -sims[j])[:k]
        votes = [0.0] * num_classes
        for j in order:
            votes[int(train_l[j])] += math.exp(sims[j] / T)
        ranked = sorted(range(num_classes), key=lambda c: -votes[c])
        top1 += ranked[0] == y
        top5 += y in ranked[:min(5, k)]
    return 100.0 * top1 / len(test_l), 100.0 * top5 / len(test_l)


def test_knn_equals_brute_force_with_few_test_images_and_many_classes():
    g = torch.Generator().manual_seed(0)
    num_classes, n_train, n_test, d = 1500, 300, 37, 16  # DINO: n_test // 100 = 0 -> crash; 1000 classes fixed
    centers = torch.randn(num_classes, d, generator=g)
    train_l = torch.randint(0, num_classes, (n_train,), generator=g)
    test_l = train_l[torch.randint(0, n_train, (n_test,), generator=g)]
    train_f = torch.nn.functional.normalize(centers[train_l] + 0.8 * torch.randn(n_train, d, generator=g), dim=1)
    test_f = torch.nn.functional.normalize(centers[test_l] + 0.8 * torch.randn(n_test, d, generator=g), dim=1)
    for k in (1, 3, 20, 200):
        got = knn_classify(train_f, train_l, test_f, test_l, k, 0.07, num_classes)
        want = brute_force_knn(train_f, train_l, test_f, test_l, k, 0.07, num_classes)
        assert got == pytest.approx(want), k
    assert 0 < knn_classify(train_f, train_l, test_f, test_l, 20, 0.07, num_classes)[0] < 100
    # k > n_train is clamped: the same as k = n_train
    assert knn_classify(train_f, train_l, test_f, test_l, 5000, 0.07) == knn_classify(
        train_f, train_l, test_f, test_l, n_train, 0.07)


def test_intermediate_blocks_are_dinos_features():
    m = tiny_backbone()
    x = torch.randn(2, 3, 64, 80)
    with torch.no_grad():
        outs = block_outputs(m, x, 2)
        assert torch.allclose(outs[-1], m.forward_features(x), atol=1e-6)
        assert torch.allclose(cls_feature(m, x), outs[-1][:, 0])
        f = last_blocks_feature(m, x, 2)
        assert f.shape == (2, 2 * 192) and torch.allclose(f[:, 192:], outs[-1][:, 0])
        f1 = last_blocks_feature(m, x, 1, avgpool=True)  # DINO's interleaved [cls_i, mean_i] layout
        assert torch.allclose(f1[:, 0::2], outs[-1][:, 0]) and torch.allclose(f1[:, 1::2], outs[-1][:, 1:].mean(1))


def test_knn_cli_labels_dumps_and_round_trip(tmp_path):
    data = make_folder(tmp_path / "shapes", classes=4, train_per_class=6, val_per_class=3)
    shutil.rmtree(data / "val" / "class_0001")  # DINO would shift the labels of classes 2 and 3
    official_style_checkpoint(tmp_path / "tiny.pth")
    r = eval_cli("knn", "tiny.pth", "--data", "shapes", "--k", "5", "10", "100", "--crop", "64", "--resize", "72",
                 "--decoder", "torch", "--workers", "0", "--dump-features", "dump", "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "k=100 is more than the 24 train images; using k=24" in r.stderr
    m = json.loads((tmp_path / "runs" / "eval" / "knn" / "metrics.json").read_text())
    assert json.loads(r.stdout) == m
    assert m["task"] == "knn" and m["temperature"] == 0.07 and m["num_classes"] == 4
    assert (m["n_train"], m["n_val"]) == (24, 9) and set(m["results"]) == {"5", "10", "100"}
    assert m["results"]["100"]["k_used"] == 24 and m["feature"] == "cls_after_norm"
    assert m["params"]["k"] == [5, 10, 100] and len(m["checkpoint_sha256"]) == 64 and m["versions"]["timm"]
    assert (tmp_path / "runs" / "eval" / "knn" / "knn.png").stat().st_size > 1000
    labels = torch.load(tmp_path / "dump" / "testlabels.pth")
    assert labels.tolist() == [0] * 3 + [2] * 3 + [3] * 3  # mapped through train's class names
    trf, tef = torch.load(tmp_path / "dump" / "trainfeat.pth"), torch.load(tmp_path / "dump" / "testfeat.pth")
    assert trf.shape == (24, 192) and torch.allclose(trf.norm(dim=1), torch.ones(24))
    # the dumped features are the [CLS] after the norm of DINO's transform, L2-normalised
    train, _ = load_layout(data)
    x = torch.stack([eval_transform(72, 64)(__import__("PIL.Image").Image.open(p).convert("RGB"))
                     for p in train.paths[:4]])
    ref = tiny_backbone()
    use_dino_pos_embed(ref)  # a DINO-format file: DINO's position-embedding interpolation at 64 px
    with torch.no_grad():
        want = torch.nn.functional.normalize(cls_feature(ref, x), dim=1)
    assert torch.allclose(trf[:4], want, atol=1e-5)
    want5 = knn_classify(trf, torch.load(tmp_path / "dump" / "trainlabels.pth"), tef, labels, 5, 0.07, 4)
    assert (m["results"]["5"]["top1"], m["results"]["5"]["top5"]) == want5
    r = eval_cli("knn", "tiny.pth", "--load-features", "dump", "--k", "5", "10", "100", "--out", "again",
                 cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "again" / "metrics.json").read_text())["results"] == m["results"]


def test_knn_bad_inputs_are_one_line(tmp_path):
    data = make_folder(tmp_path / "shapes", classes=2, train_per_class=2, val_per_class=1)
    official_style_checkpoint(tmp_path / "tiny.pth")
    (data / "val" / "zebra").mkdir()
    (data / "val" / "zebra" / "z.jpg").write_bytes((data / "val" / "class_0000").glob("*.jpg").__next__().read_bytes())
    cases = [
        (["--data", "shapes"], "class 'zebra' is not in the train split"),
        (["--data", "nowhere"], "nowhere: data folder not found"),
        (["--load-features", "nodump"], "nodump/trainfeat.pth: missing"),
    ]
    shutil.copytree(data / "train", tmp_path / "noval" / "train")
    cases.append((["--data", "noval"], "noval/val: missing"))
    (tmp_path / "emptycls" / "train" / "a").mkdir(parents=True)
    (tmp_path / "emptycls" / "val").mkdir()
    cases.append((["--data", "emptycls"], "class folder without images"))
    cases.append((["--data", "shapes", "--crop", "300"], "--crop 300 is larger than --resize 256"))
    for args, msg in cases:
        r = eval_cli("knn", "tiny.pth", *args, "--decoder", "torch", "--out", "bad", cwd=tmp_path)
        assert r.returncode == 2 and msg in r.stderr and "Traceback" not in r.stderr, (args, r.stderr)
        assert not (tmp_path / "bad" / "metrics.json").exists()
    bad = tmp_path / "shapes" / "train" / "class_0000" / "broken.jpg"
    bad.write_bytes(b"not a jpeg")
    shutil.rmtree(data / "val" / "zebra")
    for dec in ("torch", "dali"):
        r = eval_cli("knn", "tiny.pth", "--data", "shapes", "--decoder", dec, "--workers", "1", cwd=tmp_path)
        assert r.returncode == 2 and "broken.jpg: not a readable image" in r.stderr, r.stderr


@pytest.mark.parametrize("size", [(500, 375), (90, 70)])
def test_dali_and_torchvision_give_the_same_features(tmp_path, size):
    """Tolerance (stated in dora/eval/images.py): mean |pixel diff| < 0.5/255, max < 16/255, [CLS] features'
    relative L2 < 5e-3 (measured: 0.14/255, 7/255, 1e-3), for downscaled and upscaled images."""
    data = make_folder(tmp_path / "shapes", classes=3, train_per_class=4, val_per_class=1, size=size)
    train, _ = load_layout(data)
    cpu = torch.device("cpu")
    a = torch.cat([x for x, _ in dali_batches(train, 5, 1, cpu, 256, 224)])
    b = torch.cat([x for x, _ in torch_batches(train, 5, 0, eval_transform(256, 224), 224)])
    std = torch.tensor([0.229, 0.224, 0.225])[:, None, None]
    diff = ((a - b) * std * 255).abs()
    assert a.shape == b.shape == (12, 3, 224, 224)
    assert diff.mean() < 0.5 and diff.max() < 16
    m = tiny_backbone()
    with torch.no_grad():
        fa, fb = cls_feature(m, a), cls_feature(m, b)
    rel = ((fa - fb).norm(dim=1) / fb.norm(dim=1)).max()
    assert rel < 5e-3, rel
    assert not np.allclose(fa[0], fa[4], atol=1e-3)  # the features do depend on the image
