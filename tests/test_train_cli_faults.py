"""`dora-train` and its config as a new user meets them: keys out of range, config names, DINO's
flags, no GPU, a memory limit, `--version` on every command line."""

from __future__ import annotations

import resource
import subprocess
from pathlib import Path

import pytest

from dora.config import ConfigError, load_config, resolve_config
from tests.conftest import fresh_dir, run_entry


@pytest.fixture(scope="module")
def ds(tmp_path_factory, carphone) -> Path:
    out = tmp_path_factory.mktemp("trainfaults") / "ds"
    r = run_entry("dora-data", "shard", carphone, "--out", out, "--clip-frames", "4", "--clip-stride-s", "0.5",
                  "--workers", "1", "--quiet")
    assert r.returncode == 0, r.stderr
    return out


def _one_line(r: subprocess.CompletedProcess) -> str:
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    assert "Traceback" not in r.stderr, r.stderr[-2000:]
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr[-2000:]
    return lines[0]


@pytest.mark.parametrize("override, says", [
    ("train.batch_size=0", "'train.batch_size': 0 must be at least 1"),
    ("train.batch_size=-2", "'train.batch_size': -2 must be at least 1"),
    ("train.checkpoint_every=0", "'train.checkpoint_every': 0 must be at least 1"),
    ("train.log_every=0", "'train.log_every': 0 must be at least 1"),
    ("train.maps_every=0", "'train.maps_every': 0 must be at least 1"),
    ("model.depth=0", "'model.depth': 0 must be at least 1"),
    ("model.arch=vit_nonexist_patch16_224", "'model.arch': 'vit_nonexist_patch16_224' is not a timm ViT"),
    ("model.arch=resnet50", "'model.arch': 'resnet50' is not a timm ViT"),
    ("train.epochs=-1", "'train.epochs': -1 must be at least 0"),
    ("loss.teacher_temp=0", "'loss.teacher_temp': 0 must be greater than 0"),
])
def test_out_of_range_keys_are_one_line_before_any_work(ds, override, says):
    cwd = fresh_dir()
    line = _one_line(run_entry("dora-train", "--shards", ds, "--config", "smoke", "--quiet", override, cwd=cwd))
    assert says in line, line
    assert not (cwd / "runs").exists()  # nothing made for a refused run


def test_config_names_resolve_one_way(tmp_path, monkeypatch):
    """An existing file, else a shipped name (NAME, NAME.yaml, configs/NAME.yaml from any folder), else
    one line listing the shipped names; a missing file in another folder never means the shipped one."""
    monkeypatch.chdir(tmp_path)
    shipped = resolve_config("smoke")
    assert shipped.name == "smoke.yaml" and shipped.is_file()
    assert resolve_config("smoke.yaml") == shipped == resolve_config("configs/smoke.yaml")
    mine = tmp_path / "configs" / "smoke.yaml"
    mine.parent.mkdir()
    mine.write_text("train:\n  batch_size: 3\n")
    assert resolve_config("configs/smoke.yaml") == Path("configs/smoke.yaml")  # the user's own file wins
    assert load_config("configs/smoke.yaml").train.batch_size == 3
    for bad in ("nonexist/smoke.yaml", "smokee", tmp_path / "other" / "smoke.yaml"):
        with pytest.raises(ConfigError, match="config file not found.*dora_vits16, "):
            resolve_config(bad)


def test_dora_eval_takes_shipped_config_names_from_any_folder(ds):
    run = fresh_dir()
    assert run_entry("dora-train", "--shards", ds, "--config", "smoke", "--output", "r", "--quiet",
                     "train.epochs=0", cwd=run).returncode == 0
    ckpt = run / "r" / "checkpoints" / "step_00000000.pth"
    r = run_entry("dora-eval", "tracking", ckpt, "--shards", ds, "--n", "1", "--config", "configs/smoke.yaml")
    assert r.returncode == 0, r.stderr[-2000:]
    line = _one_line(run_entry("dora-eval", "tracking", ckpt, "--shards", ds, "--config", "nowhere/smoke.yaml"))
    assert "config file not found" in line and "dora_vits16" in line


def test_dora_train_with_a_wrong_config_path_does_not_run_the_shipped_one(ds):
    line = _one_line(run_entry("dora-train", "--shards", ds, "--config", "nonexist/smoke.yaml", "--quiet"))
    assert "nonexist/smoke.yaml: config file not found" in line


@pytest.mark.parametrize("flag, says", [
    (["--epochs", "3"], "train.epochs=N"),
    (["--batch_size_per_gpu", "8"], "train.batch_size=N (clips per GPU)"),
    (["--batch-size=8"], "train.batch_size=N (clips per GPU)"),
    (["--lr", "0.1"], "optim.lr=X"),
])
def test_dino_flags_get_a_hint(ds, flag, says):
    line = _one_line(run_entry("dora-train", "--shards", ds, *flag))
    assert "flag of DINO's main_dino.py" in line and says in line, line


@pytest.mark.parametrize("prog", ["dora-data", "dora-train", "dora-eval"])
def test_version(prog):
    r = run_entry(prog, "--version")
    assert r.returncode == 0 and r.stdout.startswith(f"{prog} 0.") and "python 3." in r.stdout, r.stdout + r.stderr


NO_GPU = {"CUDA_VISIBLE_DEVICES": ""}  # these tests are about a machine without one


def test_no_gpu_says_so_with_a_measured_estimate(ds):
    r = run_entry("dora-train", "--shards", ds, "--config", "smoke", "--output", "r", "--quiet", "train.epochs=0.2",
                  env=NO_GPU)
    assert r.returncode == 0, r.stderr[-2000:]
    notice = [ln for ln in r.stderr.splitlines() if "no GPU found" in ln]
    assert len(notice) == 1 and "(measured)" in notice[0] and "--config cpu_proxy" in notice[0], r.stderr


def test_a_step_that_cannot_fit_in_memory_is_refused_before_it_starts(ds):
    """ViT-S/16 on 1024 px global crops: far more than this machine's memory (the paper's config on a
    24 GB box needs ~31 GB, which the kernel used to kill silently at 22 GB)."""
    cwd = fresh_dir()
    r = run_entry("dora-train", "--shards", ds, "--config", "smoke", "--quiet", "model.arch=vit_small_patch16_224",
                  "data.global_size=1024", cwd=cwd, env=NO_GPU)
    lines = [ln for ln in r.stderr.splitlines() if not ln.startswith("dora-train: ")]
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert len(lines) == 1 and "needs at least" in lines[0] and "GB are available" in lines[0], r.stderr
    assert "train.memory_check=false" in lines[0] and not list(cwd.rglob("*.pth"))


def test_a_memory_limit_is_one_line(ds):
    """The paper's ViT-S/16 config under a 5 GB address-space limit (the estimate lets it start): the
    allocation that does not fit ends the run with one line, not a traceback."""
    limit = 5 << 30

    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    r = run_entry("dora-train", "--shards", ds, "--config", "dora_vits16", "--output", "r", "--quiet",
                  "data.clip_frames=4", "data.clip_stride_s=0.5", "train.batch_size=4", "train.num_workers=0",
                  "train.memory_check=false", preexec_fn=cap, env=NO_GPU)
    notice = [ln for ln in r.stderr.splitlines() if not ln.startswith("dora-train: ")]
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert len(notice) == 1 and notice[0].startswith("error: out of memory"), r.stderr[-2000:]
