"""Configs: shipped files load, overrides apply, mistakes give one line naming the key."""

from __future__ import annotations

import subprocess
import sys

import pytest

from dora.config import ConfigError, config_from_dict, load_config, parse_override
from tests.conftest import ROOT

CONFIGS = ROOT / "configs"


@pytest.mark.parametrize("name", ["dora_vits16", "dora_vits16_official", "dino_vits16", "smoke"])
def test_shipped_configs_load(name):
    cfg = load_config(CONFIGS / f"{name}.yaml")
    assert cfg.model.arch.startswith("vit_")


def test_paper_and_official_differ_where_documented():
    paper = load_config(CONFIGS / "dora_vits16.yaml")
    official = load_config(CONFIGS / "dora_vits16_official.yaml")
    assert (paper.dora.global_views, official.dora.global_views) == (2, 1)
    assert paper.dora.mask == official.dora.mask == "binary"  # what produced the paper's numbers
    assert paper.optim.optimizer == official.optim.optimizer == "adamw"  # the paper's "LARS" is a slip
    assert (paper.optim.min_lr, official.optim.min_lr) == (1e-6, 1e-5)
    assert (paper.data.local_size, official.data.local_size) == (96, 112)
    assert not paper.dora.official_quirks and official.dora.official_quirks
    assert load_config(CONFIGS / "dino_vits16.yaml").dora.method == "dino"


def test_overrides_with_types():
    cfg = load_config(CONFIGS / "smoke.yaml", ["optim.lr=1e-3", "train.batch_size=3", "dora.sinkhorn=false",
                                               "data.global_scale=[0.3, 0.9]", "model.last_block_heads=16",
                                               "dora.num_objects=4"])
    assert cfg.optim.lr == 1e-3 and cfg.train.batch_size == 3 and cfg.dora.sinkhorn is False
    assert cfg.data.global_scale == (0.3, 0.9) and cfg.model.last_block_heads == 16
    assert parse_override("a.b.c=x") == {"a": {"b": {"c": "x"}}}


@pytest.mark.parametrize("override, says", [
    ("optim.lrr=1", "config key 'optim.lrr' is unknown; valid keys in optim: optimizer, lr,"),
    ("optimm.lr=1", "config key 'optimm' is unknown; valid keys: model, dora, loss, data, optim, train"),
    ("train.batch_size=2.5", "config key 'train.batch_size': expected an integer, got 2.5"),
    ("dora.sinkhorn=maybe", "config key 'dora.sinkhorn': expected true or false"),
    ("dora.mask=fuzzy", "config key 'dora.mask': 'fuzzy' is not one of soft, binary"),
    ("dora.global_views=3", "config key 'dora.global_views': 3 is not one of 1, 2"),
    ("data.local_scale=0.3", "config key 'data.local_scale': expected a list of 2 numbers"),
    ("optim", "expected key=value"),
    ("dora.num_objects=8", "heads in the last block"),
])
def test_bad_overrides_name_the_key(override, says):
    extra = ["model.last_block_heads=6"] if override == "dora.num_objects=8" else []
    with pytest.raises(ConfigError) as e:
        load_config(CONFIGS / "smoke.yaml", [override, *extra])
    assert says in str(e.value) and "\n" not in str(e.value)


def test_bad_files(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    bad.write_text("- a list\n")
    with pytest.raises(ConfigError, match="top level"):
        load_config(bad)
    bad.write_text("model: 3\n")
    with pytest.raises(ConfigError, match="'model' is a section"):
        load_config(bad)


def test_headline_command_defaults_are_the_paper_config():
    """`dora-train --shards ...` without --config trains exactly configs/dora_vits16.yaml."""
    assert load_config().to_dict() == load_config(CONFIGS / "dora_vits16.yaml").to_dict()
    assert load_config().dora.mask == "binary" and load_config().train.epoch_unit == "source_frames"


@pytest.mark.parametrize("name", ["dora_vits16", "dino_vits16", "dora_vits16_official"])
def test_paper_configs_use_adamw(name):
    assert load_config(CONFIGS / f"{name}.yaml").optim.optimizer == "adamw"


def test_small_lars_lr_is_refused_unless_allowed():
    with pytest.raises(ConfigError, match="optim.allow_small_lars_lr=true") as e:
        load_config(CONFIGS / "dora_vits16.yaml", ["optim.optimizer=lars"])
    assert "\n" not in str(e.value)
    assert load_config(CONFIGS / "dora_vits16.yaml", ["optim.optimizer=lars", "optim.lr=0.3"]).optim.lr == 0.3
    ok = load_config(CONFIGS / "dora_vits16.yaml", ["optim.optimizer=lars", "optim.allow_small_lars_lr=true"])
    assert ok.optim.optimizer == "lars" and ok.optim.lr == 5e-4
    with pytest.raises(ConfigError, match="LARS"):  # a checkpoint's stored config is checked the same way
        config_from_dict({"optim": {"optimizer": "lars", "lr": 1e-3}})


def test_small_lars_lr_on_the_command_line_is_one_line_and_exit_2(tmp_path):
    r = subprocess.run([sys.executable, "-m", "dora.train_cli", "--shards", "data/wt_venice", "--config",
                        str(CONFIGS / "dora_vits16.yaml"), "optim.optimizer=lars"], cwd=tmp_path,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "optim.allow_small_lars_lr=true" in r.stderr
    assert not (tmp_path / "runs").exists()


def test_new_keys_are_validated_in_one_line():
    """Per-epoch teacher temperature needs whole warm-up epochs; model.img_size must be a positive
    multiple of the patch size."""
    from dora.config import ModelCfg
    from dora.model.vit import create_backbone

    with pytest.raises(ConfigError, match="whole number of epochs"):
        load_config(None, ["loss.warmup_teacher_temp_epochs=0.5"])
    assert load_config(None, ["loss.warmup_teacher_temp_epochs=0.5", "loss.teacher_temp_per=step"])
    with pytest.raises(ConfigError, match="model.img_size"):
        load_config(None, ["model.img_size=0"])
    with pytest.raises(ConfigError, match="multiple of the patch size 16"):
        create_backbone(ModelCfg(arch="vit_tiny_patch16_224", depth=1, img_size=70))


def test_resume_check_old_checkpoints_and_milestones(tmp_path):
    """A checkpoint saved before loss.teacher_temp_per existed ran per-step temperatures: resuming it says
    which override reproduces it; train.keep_every cannot change on resume (it decides what is kept)."""
    from dora.train.loop import _check_same
    from pipeline.errors import InputError

    cfg = load_config(None)
    old = cfg.to_dict()
    del old["loss"]["teacher_temp_per"]
    with pytest.raises(InputError, match="loss.teacher_temp_per=step"):
        _check_same(old, cfg, tmp_path / "step_00000010.pth")
    _check_same(old, load_config(None, ["loss.teacher_temp_per=step"]), tmp_path / "x.pth")
    with pytest.raises(InputError, match="train.keep_every"):
        _check_same(cfg.to_dict(), load_config(None, ["train.keep_every=100"]), tmp_path / "x.pth")
    _check_same(cfg.to_dict(), load_config(None, ["train.keep_checkpoints=5"]), tmp_path / "x.pth")


def test_checkpoints_from_before_new_keys_resume(tmp_path):
    """Keys added since (dora.random_mask, train.memory_check) do not refuse an older checkpoint where they
    change nothing; where dora.random_mask matters (random masks), the hint names the old meaning."""
    from dora.train.loop import _check_same
    from pipeline.errors import InputError

    old_cfg = load_config(None, ["loss.teacher_temp_per=step"])
    old = old_cfg.to_dict()
    del old["dora"]["random_mask"], old["train"]["memory_check"]
    _check_same(old, old_cfg, tmp_path / "x.pth")
    rnd = load_config(None, ["loss.teacher_temp_per=step", "dora.mask_source=random"])
    old_rnd = rnd.to_dict()
    del old_rnd["dora"]["random_mask"]
    with pytest.raises(InputError, match="dora.random_mask=keep"):
        _check_same(old_rnd, rnd, tmp_path / "x.pth")
    _check_same(old_rnd, load_config(None, ["loss.teacher_temp_per=step", "dora.mask_source=random",
                                            "dora.random_mask=keep"]), tmp_path / "x.pth")
