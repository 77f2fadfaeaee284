"""Official DoRA/DINO files and DINO-format exports are evaluated with DINO's position-embedding
interpolation (bicubic, no antialias, scale (g + 0.1) / s), as the code that made them evaluates them;
timm exports with timm's; our checkpoints as their saved config says. metrics.json records the choice."""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image

from dora.config import ModelCfg, load_config
from dora.eval.common import load_encoder
from dora.eval.features import cls_feature
from dora.eval.images import eval_transform, load_layout
from dora.eval.teacher import teacher_model
from dora.model.vit import create_backbone
from tests.conftest import ROOT, run_entry
from tests.imagefolders import make_folder

SMOKE = ROOT / "configs" / "smoke.yaml"


def random_vit(seed: int = 0) -> torch.nn.Module:
    """A random timm ViT-Tiny (2 blocks) whose position embeddings are far from smooth (N(0, 1)), so
    that the two resampling rules give clearly different features."""
    torch.manual_seed(seed)
    m = create_backbone(ModelCfg(arch="vit_tiny_patch16_224", depth=2, drop_path=0.0)).eval()
    with torch.no_grad():
        m.pos_embed.normal_()
    return m


def official_file(model: torch.nn.Module, path: Path) -> Path:
    """What the official DoRA/DINO trainer saves: teacher (backbone + head), DDP student, epoch."""
    sd = model.state_dict()
    torch.save({"teacher": {**{f"backbone.{k}": v for k, v in sd.items()}, "head.last_layer.weight": torch.randn(8, 4)},
                "student": {f"module.backbone.{k}": v for k, v in sd.items()}, "epoch": 3}, path)
    return path


def dino_pos_embed(pos_embed: torch.Tensor, gh: int, gw: int) -> torch.Tensor:
    """DINO's vision_transformer.interpolate_pos_encoding, restated from its text."""
    n = pos_embed.shape[1] - 1
    dim = pos_embed.shape[-1]
    if gh * gw == n and gh == gw:
        return pos_embed
    h0, w0 = gh + 0.1, gw + 0.1
    grid = pos_embed[:, 1:].reshape(1, int(math.sqrt(n)), int(math.sqrt(n)), dim).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, scale_factor=(h0 / math.sqrt(n), w0 / math.sqrt(n)), mode="bicubic")
    assert grid.shape[-2:] == (gh, gw)
    return torch.cat([pos_embed[:, :1], grid.permute(0, 2, 3, 1).reshape(1, -1, dim)], dim=1)


@torch.no_grad()
def dino_cls(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """DINO's ViT forward (prepare_tokens, blocks, norm) on the same weights: the [CLS] output."""
    p = model.patch_embed.patch_size[0]
    t = model.patch_embed.proj(x).flatten(2).transpose(1, 2)
    t = torch.cat([model.cls_token.expand(x.shape[0], -1, -1), t], dim=1)
    t = t + dino_pos_embed(model.pos_embed, x.shape[-2] // p, x.shape[-1] // p)
    for blk in model.blocks:
        t = blk(t)
    return model.norm(t)[:, 0]


def knn(cwd: Path, ckpt: str, out: str, *extra: str) -> dict:
    r = run_entry("dora-eval", "knn", ckpt, "--data", "shapes", "--k", "3", "--crop", "64", "--resize", "72",
                  "--decoder", "torch", "--workers", "0", "--device", "cpu", "--quiet", "--out", out,
                  "--dump-features", f"{out}/dump", *extra, cwd=cwd)
    assert r.returncode == 0, r.stderr
    return json.loads((cwd / out / "metrics.json").read_text())


def test_official_files_and_dino_exports_use_dinos_interpolation(tmp_path):
    data = make_folder(tmp_path / "shapes", classes=3, train_per_class=3, val_per_class=2)
    model = random_vit()
    official_file(model, tmp_path / "official.pth")
    train, _ = load_layout(data)
    x = torch.stack([eval_transform(72, 64)(Image.open(p).convert("RGB")) for p in train.paths])  # a 4 x 4 grid
    want_dino = F.normalize(dino_cls(model, x), dim=1)
    with torch.no_grad():
        want_timm = F.normalize(cls_feature(model, x), dim=1)
    assert (want_dino - want_timm).abs().max() > 1e-3  # the two rules differ here (measured: 6e-3)

    m = knn(tmp_path, "official.pth", "official")
    got = torch.load(tmp_path / "official" / "dump" / "trainfeat.pth")
    assert torch.allclose(got, want_dino, atol=1e-5), (got - want_dino).abs().max()
    assert m["pos_embed_interpolation"] == "dino" and "DINO-format" in m["pos_embed_interpolation_why"]

    for to in ("timm", "dino"):
        r = run_entry("dora-train", "export", "official.pth", "--to", to, f"{to}.pth", cwd=tmp_path)
        assert r.returncode == 0, r.stderr
    m = knn(tmp_path, "dino.pth", "dino_export")  # what DINO's eval scripts would compute on the export
    assert torch.allclose(torch.load(tmp_path / "dino_export" / "dump" / "trainfeat.pth"), want_dino, atol=1e-5)
    assert m["pos_embed_interpolation"] == "dino"
    m = knn(tmp_path, "timm.pth", "timm_export")  # what timm computes on a timm export
    assert torch.allclose(torch.load(tmp_path / "timm_export" / "dump" / "trainfeat.pth"), want_timm, atol=1e-5)
    assert m["pos_embed_interpolation"] == "timm" and "timm" in m["pos_embed_interpolation_why"]

    # a --config that sets the rule wins; one that does not (smoke) keeps the file's
    (tmp_path / "timm.yaml").write_text(SMOKE.read_text().replace("model:\n", "model:\n  pos_embed_resample: timm\n"))
    m = knn(tmp_path, "official.pth", "forced", "--config", "timm.yaml")
    assert m["pos_embed_interpolation"] == "timm" and "--config" in m["pos_embed_interpolation_why"]
    assert torch.allclose(torch.load(tmp_path / "forced" / "dump" / "trainfeat.pth"), want_timm, atol=1e-5)
    enc = load_encoder(tmp_path / "official.pth", config=SMOKE)
    assert enc.pos_embed == "dino"

    # dora-eval attention / tracking build the teacher the same way
    dora, cfg = teacher_model(tmp_path / "official.pth", None, ())
    assert cfg.model.pos_embed_resample == "dino"
    with torch.no_grad():
        got = dora.teacher.backbone.forward_features(x)[:, 0]
    assert torch.allclose(got, dino_cls(model, x), atol=1e-5)


def ours(path, model, resample: str):
    """A checkpoint in dora-train's layout (its config, the DoRA module's weights) of `model`, trained with
    model.pos_embed_resample=`resample`."""
    cfg = load_config(SMOKE, [f"model.pos_embed_resample={resample}"])
    torch.save({"config": cfg.to_dict(), "step": 1,
                "model": {f"teacher.backbone.{k}": v for k, v in model.state_dict().items()}}, path)
    return path


def assert_resampled_as(enc, model, x: torch.Tensor, resample: str) -> None:
    """The loaded encoder's [CLS] on `x` (off the training grid) equals `model`'s under `resample`'s rule:
    DINO's interpolate_pos_encoding for "dino", timm's own resampling for "timm"."""
    with torch.no_grad():
        got = cls_feature(enc.model, x)
        want = dino_cls(model, x) if resample == "dino" else cls_feature(model, x)
    assert torch.allclose(got, want, atol=1e-5)


def test_our_checkpoints_keep_their_saved_config(tmp_path):
    model = random_vit(1)
    x = torch.randn(2, 3, 80, 48)
    for resample in ("timm", "dino"):
        path = ours(tmp_path / f"ours_{resample}.pth", model, resample)
        enc = load_encoder(path)
        assert enc.pos_embed == resample and "saved config" in enc.pos_embed_why
        assert_resampled_as(enc, model, x, resample)


def test_a_dino_export_of_our_run_keeps_the_runs_resampling(tmp_path):
    """`export --to dino` of a run that trained with timm's resampling is evaluated with timm's (the file
    records it; DINO's scripts ignore the extra key); of a `dino` run, with DINO's."""
    from dora.checkpoint import export

    model = random_vit(1)
    x = torch.randn(2, 3, 80, 48)
    for resample in ("timm", "dino"):
        out = export(ours(tmp_path / f"ours_{resample}.pth", model, resample), "dino",
                     tmp_path / f"export_{resample}.pth")
        assert torch.load(out, weights_only=False)["pos_embed_resample"] == resample
        enc = load_encoder(out)
        assert enc.pos_embed == resample and "dora-train export" in enc.pos_embed_why
        assert_resampled_as(enc, model, x, resample)
