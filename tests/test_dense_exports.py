"""`dora-train export --to hf|mmseg|mae|seqtrack`: each export loads where its toolkit loads it.

- hf: transformers' ViTModel.from_pretrained gives the teacher's [CLS] and patch tokens (strict: no
  missing, unexpected or mismatched key), and the model card names the run, the data and the numbers.
- mmseg, mae, seqtrack: key for key and shape for shape the ViT-S/16 that the library's own class
  builds (tests/data/keylists/, made by bench/dense_keylists.py from mmsegmentation, MAE's models_vit
  and SeqTrack's vit.py), after what the library's loader does to a file (keys it removes or resizes,
  keys a fine-tuning initialises, keys a non-strict load drops). mae also loads strictly into timm.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from dora.checkpoint import backbone_weights, load, load_backbone
from dora.config import config_from_dict, load_config
from dora.model import DoRA, create_backbone
from tests.conftest import ROOT, run_entry, start_cli
from tests.imagefolders import make_folder

KEYLISTS = ROOT / "tests" / "data" / "keylists"
STEP = 1234


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """runs/r/checkpoints/step_00001234.pth in the trainer's layout (step, model, config, shards): the
    default ViT-S/16 DoRA (a small DINO head), every tensor moved off its initial value, so that a
    norm or bias mapped to the wrong place changes the tokens."""
    cfg = load_config(None, ["model.out_dim=256", "model.hidden_dim=64", "model.bottleneck_dim=32"])
    sd = DoRA.from_config(cfg).state_dict()
    g = torch.Generator().manual_seed(0)
    for v in sd.values():
        if v.is_floating_point():
            v.add_(torch.randn(v.shape, generator=g) * 0.05)
    root = tmp_path_factory.mktemp("dense") / "r"
    (root / "checkpoints").mkdir(parents=True)
    torch.save({"step": STEP, "model": sd, "config": cfg.to_dict(), "shards": ["/data/shards/wt_venice"],
                "images": None}, root / "checkpoints" / f"step_{STEP:08d}.pth")
    return root


def ckpt_of(run: Path) -> Path:
    return run / "checkpoints" / f"step_{STEP:08d}.pth"


def export(*args, cwd: Path | None = None):
    return run_entry("dora-train", "export", *map(str, args), cwd=cwd)


def teacher(ckpt: Path) -> torch.nn.Module:
    """Our teacher backbone as dora-eval builds it from the checkpoint (its saved config)."""
    state = load(ckpt)
    model = create_backbone(config_from_dict(state["config"]).model).eval()
    load_backbone(model, backbone_weights(state))
    return model


def keylist(lib: str) -> dict:
    return json.loads((KEYLISTS / f"{lib}_vit_s16.json").read_text())


def check_against(file_sd: dict[str, torch.Tensor], variant: dict) -> None:
    """The file's keys are the library model's keys (less those a fine-tuning initialises), plus the keys
    its loader removes, plus those a non-strict load drops; every shape equal, except the position
    embedding that the loader resizes, which must be a class position and a square grid of that width."""
    model = variant["keys"]
    removed = variant.get("removed_by_loader", {})
    dropped = set(variant.get("dropped_by_non_strict_load", []))
    fresh = set(variant.get("initialised_by_finetuning", []))
    assert set(file_sd) - set(removed) - dropped == set(model) - fresh, (
        sorted(set(file_sd) ^ (set(model) - fresh | set(removed) | dropped))[:6])
    for k, shape in removed.items():
        assert list(file_sd[k].shape) == shape, k
    for k in set(model) - fresh:
        if k in variant.get("loader_resizes", []):
            n, dim = file_sd[k].shape[1], file_sd[k].shape[-1]
            assert dim == model[k][-1] and round((n - 1) ** 0.5) ** 2 == n - 1, (k, list(file_sd[k].shape))
        else:
            assert list(file_sd[k].shape) == model[k], (k, list(file_sd[k].shape), model[k])


def test_hf_folder_loads_in_transformers_with_the_teachers_tokens_and_names_the_run(run, tmp_path):
    from transformers import ViTModel

    ckpt = ckpt_of(run)
    # a real evaluation of this checkpoint, beside it: its numbers go into the model card
    make_folder(tmp_path / "shapes", classes=3, train_per_class=3, val_per_class=2)
    r = run_entry("dora-eval", "knn", ckpt, "--data", tmp_path / "shapes", "--k", "3", "--crop", "64", "--resize",
                  "72", "--decoder", "torch", "--workers", "0", "--device", "cpu", "--quiet", "--out", run / "knn")
    assert r.returncode == 0, r.stderr
    knn = json.loads((run / "knn" / "metrics.json").read_text())
    out = tmp_path / "exports" / "dora_vits16_hf"
    r = export(ckpt, "--to", "hf", "--out", out)
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["config.json", "model.safetensors", "preprocessor_config.json", "README.md"])
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no temporary sibling left
    config = json.loads((out / "config.json").read_text())
    assert (config["hidden_size"], config["num_hidden_layers"], config["num_attention_heads"],
            config["intermediate_size"], config["patch_size"], config["image_size"], config["layer_norm_eps"],
            config["qkv_bias"], config["hidden_act"]) == (384, 12, 6, 1536, 16, 224, 1e-6, True, "gelu")

    model, info = ViTModel.from_pretrained(out, add_pooling_layer=False, output_loading_info=True)
    assert not (info["missing_keys"] or info["unexpected_keys"] or info["mismatched_keys"]), info
    model.eval()
    ours = teacher(ckpt)
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want, got = ours.forward_features(x), model(pixel_values=x).last_hidden_state
    assert got.shape == want.shape == (2, 197, 384)
    assert torch.allclose(got, want, atol=1e-4), (got - want).abs().max()

    # 160 px: transformers resizes the 14x14 position grid to 10x10 bicubically without antialiasing
    # (interpolate_pos_encoding); the tokens are the teacher's with that grid, not timm's antialiased one
    x = torch.randn(2, 3, 160, 160, generator=torch.Generator().manual_seed(2))
    pe = ours.pos_embed.detach()
    grid = F.interpolate(pe[:, 1:].reshape(1, 14, 14, 384).permute(0, 3, 1, 2), size=(10, 10), mode="bicubic",
                         align_corners=False).permute(0, 2, 3, 1).reshape(1, 100, 384)
    at160 = create_backbone(config_from_dict({**load(ckpt)["config"], "model": {
        **load(ckpt)["config"]["model"], "img_size": 160}}).model).eval()
    at160.load_state_dict({**ours.state_dict(), "pos_embed": torch.cat([pe[:, :1], grid], 1)})
    with torch.no_grad():
        got = model(pixel_values=x, interpolate_pos_encoding=True).last_hidden_state
        assert torch.allclose(got, at160.forward_features(x), atol=1e-4)
        timm_way = ours.forward_features(x)  # timm's antialiased resampling: close, not equal (README says so)
    assert not torch.allclose(got, timm_way, atol=1e-4)
    assert F.cosine_similarity(got, timm_way, dim=-1).min() > 0.9

    card = (out / "README.md").read_text()
    assert str(ckpt.resolve()) in card and f"step: {STEP}" in card and "/data/shards/wt_venice" in card
    assert "### knn" in card and str(run / "knn" / "metrics.json") in card
    top1 = [v for k, v in knn.items() if isinstance(v, (int, float)) and not isinstance(v, bool)
            and k not in ("elapsed_s",)]
    assert top1 and all(f"{v:.6g}" in card or str(v) in card for v in top1)


def test_hf_card_metrics_option_and_an_export_without_config(run, tmp_path):
    """--metrics adds a file from elsewhere (one of another checkpoint is marked so); without any the card
    says none; an export carrying no config (a DINO-format file) gets the heads of its width."""
    dino = tmp_path / "teacher_dino.pth"
    assert export(ckpt_of(run), "--to", "dino", dino).returncode == 0
    r = export(dino, "--to", "hf", tmp_path / "hf_plain")
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "hf_plain" / "config.json").read_text())["num_attention_heads"] == 6
    card = (tmp_path / "hf_plain" / "README.md").read_text()
    assert "## Evaluation\n\nNone:" in card and "not recorded in the checkpoint" in card
    other = {"task": "linear", "checkpoint": "/elsewhere/ckpt.pth", "checkpoint_sha256": "0" * 64,
             "results": {"top1": 61.25}, "elapsed_s": 3.0}
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "metrics.json").write_text(json.dumps(other))
    r = export(dino, "--to", "hf", tmp_path / "hf_plain", "--metrics", tmp_path / "m")
    assert r.returncode == 0, r.stderr
    card = (tmp_path / "hf_plain" / "README.md").read_text()
    assert "### linear" in card and "results.top1: 61.25" in card and "not this file" in card
    assert "elapsed_s" not in card


def test_mmseg_export_has_mmsegs_vit_s16_keys_and_shapes(run, tmp_path):
    r = export(ckpt_of(run), "--to", "mmseg", tmp_path / "vits16_mmseg.pth")
    assert r.returncode == 0, r.stderr
    saved = torch.load(tmp_path / "vits16_mmseg.pth", map_location="cpu", weights_only=True)
    assert set(saved) == {"meta", "state_dict"}
    lists = keylist("mmseg")
    assert lists["library"] == "mmsegmentation" and lists["class"].endswith("VisionTransformer")
    check_against(saved["state_dict"], lists["variants"]["patch_bias=True"])
    # the same tensors as the teacher's, under vit2mmseg.py's names
    w = backbone_weights(load(ckpt_of(run)))
    sd = saved["state_dict"]
    assert torch.equal(sd["layers.3.attn.attn.in_proj_weight"], w["blocks.3.attn.qkv.weight"])
    assert torch.equal(sd["layers.11.ffn.layers.0.0.bias"], w["blocks.11.mlp.fc1.bias"])
    assert torch.equal(sd["ln1.weight"], w["norm.weight"]) and torch.equal(sd["layers.0.ln2.bias"],
                                                                          w["blocks.0.norm2.bias"])


def test_mae_export_loads_strictly_into_timm_and_matches_maes_models_vit(run, tmp_path):
    import timm

    r = export(ckpt_of(run), "--to", "mae", "--out", tmp_path / "vits16_mae.pth")
    assert r.returncode == 0, r.stderr
    saved = torch.load(tmp_path / "vits16_mae.pth", map_location="cpu", weights_only=True)
    assert set(saved) == {"model"} and saved["model"]["pos_embed"].shape == (1, 197, 384)  # cls position kept
    m = timm.create_model("vit_small_patch16_224", num_classes=0).eval()
    m.load_state_dict(saved["model"], strict=True)
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        assert torch.allclose(m.forward_features(x), teacher(ckpt_of(run)).forward_features(x), atol=1e-5)
    lists = keylist("mae")
    for name, variant in lists["variants"].items():
        check_against(saved["model"], variant)
        # what main_finetune.py asserts after its strict=False load
        missing = set(variant["keys"]) - set(saved["model"])
        want = {"head.weight", "head.bias"} | ({"fc_norm.weight", "fc_norm.bias"} if "True" in name else set())
        assert missing == want, (name, missing)


def test_seqtrack_export_is_what_seqtracks_loader_loads_strictly(run, tmp_path):
    r = export(ckpt_of(run), "--to", "seqtrack", tmp_path / "vits16_seqtrack.pth")
    assert r.returncode == 0, r.stderr
    saved = torch.load(tmp_path / "vits16_seqtrack.pth", map_location="cpu", weights_only=True)
    assert set(saved) == {"model"}
    lists = keylist("seqtrack")
    assert "strict=True" in lists["loader"]
    check_against(saved["model"], lists["variants"]["search 256, template 256"])


def test_bad_format_output_and_metrics_are_one_line(run, tmp_path):
    ckpt = ckpt_of(run)
    (tmp_path / "afile").write_text("x")
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    cases = [
        (["--to", "onnx", tmp_path / "x.onnx"], "--to 'onnx': choose one of timm, dino, hf, mmseg, mae, seqtrack"),
        (["--to", "mmseg", tmp_path / "afile" / "x.pth"], "cannot write the output folder, it is a file"),
        (["--to", "hf", tmp_path / "afile"], "is a file; --to hf writes a folder"),
        (["--to", "hf", tmp_path / "busy"], "not an earlier --to hf export"),
        (["--to", "mae"], "no output given"),
        (["--to", "mae", tmp_path / "a.pth", "--out", tmp_path / "b.pth"], "give OUT or --out PATH, not both"),
        (["--to", "mae", tmp_path / "a.pth", "--metrics", tmp_path / "m.json"], "--metrics goes into the hf"),
        (["--to", "hf", tmp_path / "new_hf", "--metrics", tmp_path / "missing.json"], "--metrics file not found"),
        (["--to", "mmseg", tmp_path / "d" / "e" / "x.pth", "--key", "nothing"], "no ViT backbone under 'nothing'"),
    ]
    for args, words in cases:
        r = export(ckpt, *args)
        assert r.returncode == 2 and words in r.stderr, (args, r.stderr)
        assert r.stderr.startswith("error: ") and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not (tmp_path / "new_hf").exists() and not (tmp_path / "d").exists()  # refused: nothing made
    assert (tmp_path / "busy" / "notes.txt").read_text() == "mine"


def test_a_killed_hf_export_leaves_no_half_folder_and_a_rerun_replaces_it(run, tmp_path):
    out = tmp_path / "hf"
    proc = start_cli("dora-train", "export", str(ckpt_of(run)), "--to", "hf", str(out))
    deadline = time.time() + 300
    while proc.poll() is None and time.time() < deadline:
        if any(p.name.startswith(".hf.tmp") and (p / "config.json").exists() for p in tmp_path.iterdir()):
            os.kill(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.005)
    proc.wait()
    if proc.returncode != -signal.SIGKILL:
        pytest.fail("the export finished before the test could kill it while it wrote")
    assert not out.exists()  # the half-written folder is only under its temporary name
    r = export(ckpt_of(run), "--to", "hf", out)
    assert r.returncode == 0, r.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["hf"]  # the killed one's temporary folder was removed
    (out / "README.md").unlink()
    r = export(ckpt_of(run), "--to", "hf", out)  # an earlier export is replaced whole
    assert r.returncode == 0 and (out / "README.md").exists()


@pytest.mark.parametrize("to", ["hf", "mmseg"])
def test_read_only_and_full_disk_outputs_are_one_line_and_leave_nothing(run, to):
    from tests.test_one_line_faults import full_disk, read_only_folder

    with read_only_folder() as ro:
        r = export(ckpt_of(run), "--to", to, ro / "out")
        assert r.returncode == 2 and "cannot write the output folder" in r.stderr, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1 and not any(ro.iterdir())
    with full_disk() as (out, limit):
        r = run_entry("dora-train", "export", ckpt_of(run), "--to", to, out / "vit", preexec_fn=limit)
        assert r.returncode == 2 and "disk full" in r.stderr, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert not out.exists() or not any(out.iterdir())  # no half file or folder, no temporary one
