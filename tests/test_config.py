"""Configs: shipped files load, overrides apply, mistakes give one line naming the key."""

from __future__ import annotations

import pytest

from dora.config import ConfigError, load_config, parse_override
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
    assert (paper.dora.mask, official.dora.mask) == ("soft", "binary")
    assert (paper.optim.optimizer, official.optim.optimizer) == ("lars", "adamw")
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
