"""The trainer on CPU: smoke run, exact resume after kill -9, both loaders, corrupt data, export, errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from dora.config import load_config
from dora.data.batches import BatchSource
from dora.data.loader import Loader
from pipeline.dataset.reader import Dataset
from tests.conftest import ROOT, damaged_copy, run_entry, start_cli

SMOKE = ROOT / "configs" / "smoke.yaml"


def train_cli(*args, timeout: float = 600, **kw) -> subprocess.CompletedProcess:
    return run_entry("dora-train", *args, timeout=timeout, **kw)


def _losses(run: Path) -> list[tuple[int, float]]:
    return [(r["step"], r["loss"]) for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())]


def test_smoke_run_trains_and_writes_everything(main_ds, tmp_path):
    run = tmp_path / "run"
    r = train_cli("--shards", main_ds, "--config", SMOKE, "--output", run, "--quiet", "train.epochs=0.2",
                  "train.checkpoint_every=4")
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    losses = [loss for _, loss in _losses(run)]
    assert summary["steps"] == len(losses) >= 6
    assert np.all(np.isfinite(losses))
    half = len(losses) // 2
    assert np.mean(losses[half:]) < np.mean(losses[:half])  # decreasing on average
    rec = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    assert {"lr", "weight_decay", "momentum", "teacher_temp", "clips_per_s", "data_wait_pct", "map_entropy",
            "mask_coverage", "epoch"} <= set(rec)
    assert sorted(p.name for p in (run / "checkpoints").iterdir())[-1] == f"step_{summary['steps']:08d}.pth"
    pngs = sorted((run / "maps").glob("*.png"))
    assert pngs[0].name == "step_00000000.png" and len(pngs) >= 2
    assert list((run / "tb").glob("events.out.tfevents.*"))


def test_kill_9_and_resume_gives_the_same_losses(main_ds, tmp_path):
    args = ["--shards", main_ds, "--config", SMOKE, "--quiet", "train.epochs=0.3", "train.checkpoint_every=2"]
    ref = tmp_path / "ref"
    assert train_cli(*args, "--output", ref).returncode == 0
    run = tmp_path / "killed"
    proc = start_cli("dora-train", *args, "--output", run)
    target = run / "checkpoints" / "step_00000004.pth"
    deadline = time.time() + 300
    while not target.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert target.exists()
    r = train_cli(*args, "--output", run)
    assert r.returncode == 0, r.stderr
    got, want = _losses(run), _losses(ref)
    assert [s for s, _ in got] == [s for s, _ in want]  # every step logged once
    assert np.allclose([v for _, v in got], [v for _, v in want], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("sizes, tol", [((224, 96), 0.01), ((64, 32), 0.05)])
def test_both_loader_paths_draw_the_same_clips_and_views(main_ds, sizes, tol):
    """DALI (CPU here) and torch: identical clips, and views equal up to resampling (mean |diff| in
    normalised units; 0.01 is about 0.6/255 per pixel)."""
    cfg = load_config(SMOKE, ["train.batch_size=3", f"data.global_size={sizes[0]}", f"data.local_size={sizes[1]}"])
    source = BatchSource.from_config([str(main_ds)], cfg)
    dali = Loader(source, 5, torch.device("cpu"), "dali")
    plain = Loader(source, 5, torch.device("cpu"), "torch")
    for _ in range(2):
        a, b = next(dali), next(plain)
        assert a.positions == b.positions == list(range(a.positions[0], a.positions[0] + 3))
        assert a.globals_.shape == b.globals_.shape == (3, 4, 2, 3, sizes[0], sizes[0])
        assert a.locals_.shape == b.locals_.shape == (3, 4, 2, 3, sizes[1], sizes[1])
        assert float((a.globals_ - b.globals_).abs().mean()) < tol
        assert float((a.locals_ - b.locals_).abs().mean()) < tol
    assert a.positions[0] == 18  # batch 6 of 3 clips: resumable by step


def test_corrupt_frames_are_skipped_and_counted(main_ds, tmp_path):
    n = len(Dataset(main_ds).table("bikes"))
    broken = damaged_copy(main_ds, tmp_path / "broken", "bikes", range(0, n, 3), 2)  # every 3rd: no end marker
    run = tmp_path / "run"
    r = train_cli("--shards", broken, "--config", SMOKE, "--output", run, "--quiet", "train.epochs=0.5",
                  "train.batch_size=4", "train.max_bad_fraction=0.9")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout.strip().splitlines()[-1])["bad_clips"] > 0
    assert "bikes" in (run / "bad_clips.rank0.log").read_text()
    r = train_cli("--shards", broken, "--config", SMOKE, "--output", tmp_path / "strict", "--quiet",
                  "train.epochs=0.5", "train.batch_size=4", "train.max_bad_fraction=0.0")
    assert r.returncode == 2 and "unreadable" in r.stderr and "dora-data verify" in r.stderr
    assert "Traceback" not in r.stderr


def test_nan_loss_stops_with_a_clear_line_and_keeps_the_checkpoint(main_ds, tmp_path):
    run = tmp_path / "nan"
    r = train_cli("--shards", main_ds, "--config", SMOKE, "--output", run, "--quiet", "optim.lr=1e12",
                  "train.checkpoint_every=1", "train.epochs=0.3")
    assert r.returncode == 2 and "loss is nan" in r.stderr and "Traceback" not in r.stderr
    assert "Last good checkpoint" in r.stderr and list((run / "checkpoints").glob("step_*.pth"))


@pytest.mark.parametrize("args, says", [
    (["optim.lrr=1"], "config key 'optim.lrr' is unknown"),
    (["train.batch_size=x"], "config key 'train.batch_size': expected an integer"),
])
def test_bad_config_key(main_ds, tmp_path, args, says):
    r = train_cli("--shards", main_ds, "--config", SMOKE, "--output", tmp_path / "r", *args)
    assert r.returncode == 2 and says in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_missing_shards_and_mismatched_resume(main_ds, tmp_path):
    r = train_cli("--shards", tmp_path / "nowhere", "--config", SMOKE, "--output", tmp_path / "r")
    assert r.returncode == 2 and "not a finished shard folder" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    run = tmp_path / "run"
    assert train_cli("--shards", main_ds, "--config", SMOKE, "--output", run, "--quiet",
                     "train.epochs=0.1").returncode == 0
    r = train_cli("--shards", main_ds, "--config", SMOKE, "--output", run, "--quiet", "train.epochs=0.2",
                  "dora.num_objects=1")
    assert r.returncode == 2 and "other options (dora.num_objects)" in r.stderr
    r = train_cli("--shards", main_ds, "--config", SMOKE, "--output", run, "--quiet", "--resume", "none")
    assert r.returncode == 2 and "already holds checkpoints" in r.stderr


def test_export_to_timm_and_dino_and_import_official(main_ds, tmp_path):
    import timm

    run = tmp_path / "run"
    assert train_cli("--shards", main_ds, "--config", SMOKE, "--output", run, "--quiet",
                     "train.epochs=0.1").returncode == 0
    ckpt = sorted((run / "checkpoints").iterdir())[-1]
    state = torch.load(ckpt, map_location="cpu", weights_only=False)
    teacher = {k[len("teacher.backbone."):]: v for k, v in state["model"].items() if k.startswith("teacher.backbone.")}
    x = torch.randn(2, 3, 64, 64)

    def timm_features(path: Path) -> torch.Tensor:
        m = timm.create_model("vit_tiny_patch16_224", depth=2, pretrained=True, num_classes=0, dynamic_img_size=True,
                              pretrained_cfg_overlay=dict(file=str(path))).eval()
        with torch.no_grad():
            return m(x)

    ref = timm.create_model("vit_tiny_patch16_224", depth=2, num_classes=0, dynamic_img_size=True).eval()
    ref.load_state_dict(teacher)
    with torch.no_grad():
        want = ref(x)
    for name in ("teacher.pth", "teacher.safetensors"):
        r = train_cli("export", ckpt, "--to", "timm", tmp_path / name)
        assert r.returncode == 0, r.stderr
        assert torch.allclose(timm_features(tmp_path / name), want, atol=1e-6)
    for to in ("timm", "hf"):  # a run folder means its newest checkpoint, as in the README's recipes
        r = train_cli("export", run, "--to", to, tmp_path / f"from_run_{to}")
        assert r.returncode == 0, r.stderr
    assert torch.allclose(timm_features(tmp_path / "from_run_timm"), want, atol=1e-6)
    r = train_cli("export", ckpt, "--to", "dino", tmp_path / "dino.pth")
    dino = torch.load(tmp_path / "dino.pth", map_location="cpu")
    assert set(dino) == {"teacher", "pos_embed_resample"} and all(k.startswith("backbone.") for k in dino["teacher"])
    assert dino["pos_embed_resample"] == "timm"  # the smoke run's own resampling (DINO's scripts ignore the key)
    # an official DoRA/DINO checkpoint: DDP's module. and the multi-crop wrapper's backbone. prefixes
    official = {"teacher": {**{f"module.backbone.{k}": v for k, v in teacher.items()},
                            "module.head.last_layer.weight_g": torch.ones(1, 1)}, "epoch": 100}
    torch.save(official, tmp_path / "official.pth")
    r = train_cli("export", tmp_path / "official.pth", "--to", "timm", tmp_path / "from_official.pth")
    assert r.returncode == 0, r.stderr
    assert torch.allclose(timm_features(tmp_path / "from_official.pth"), want, atol=1e-6)
    # and training can start from it (fine-tuning)
    r = train_cli("--shards", main_ds, "--config", SMOKE, "--output", tmp_path / "ft", "--quiet", "train.epochs=0.1",
                  f"model.init={tmp_path / 'official.pth'}")
    assert r.returncode == 0, r.stderr
    r = train_cli("export", tmp_path / "nothing.pth", "--to", "timm", tmp_path / "x.pth")
    assert r.returncode == 2 and "checkpoint not found" in r.stderr


def test_torchrun_two_processes_on_cpu(main_ds, tmp_path):
    """DDP over gloo: ranks read disjoint clips, share one loss, checkpoint every rank's RNG, and resume."""
    run = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517",
           "-m", "dora.train_cli", "--shards", str(main_ds), "--config", str(SMOKE), "--output", str(run), "--quiet",
           "train.epochs=0.3", "train.checkpoint_every=2"]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    summaries = [json.loads(ln) for ln in r.stdout.splitlines() if ln.startswith("{")]
    assert len(summaries) == 1 and summaries[0]["checkpoint"].endswith(".pth")  # rank 0's only
    state = torch.load(sorted((run / "checkpoints").iterdir())[-1], map_location="cpu", weights_only=False)
    assert state["world"] == 2 and len(state["rng"]) == 2
    assert not torch.equal(state["rng"][0]["torch"], state["rng"][1]["torch"])
    steps = [s for s, _ in _losses(run)]
    assert steps == list(range(1, len(steps) + 1))
    cfg = load_config(SMOKE)
    ranks = [BatchSource.from_config([str(main_ds)], cfg, rank=r, world=2) for r in range(2)]
    seen = [{(c.video, c.rows[0]) for b in range(len(steps)) for c in src(b).clips} for src in ranks]
    assert not seen[0] & seen[1]
    more = subprocess.run(cmd[:-2] + ["train.epochs=0.5", "train.checkpoint_every=2"], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert more.returncode == 0, more.stderr[-2000:]
    assert [s for s, _ in _losses(run)] == list(range(1, len(_losses(run)) + 1)) and len(_losses(run)) > len(steps)


def test_an_epoch_is_one_clip_per_source_frame_and_schedules_follow(main_ds, tmp_path):
    """train.epoch_unit=source_frames (the default, the official epoch): clips per epoch = each video's
    valid starts x fps_source / fps_stored; warm-up and the run length count in those epochs; the
    start prints clips/epoch, steps/epoch, total steps and time estimates."""
    from pipeline.dataset.clips import ClipSpec, clip_rows

    ds = Dataset(main_ds)
    stored = source = 0.0
    for v in ds.videos:
        tab = ds.table(v["name"])
        n = len(clip_rows(tab.t, tab.shot, float(v["fps_stored"]), ClipSpec(4, 0.5)))  # smoke.yaml's clips
        stored, source = stored + n, source + n * float(v["fps_source"]) / float(v["fps_stored"])
    per_epoch = int(source) // 2  # smoke batch: 2 clips
    assert per_epoch >= 2 * (int(stored) // 2)  # 25-30 fps sources stored at 10 fps
    for unit, want in (("source_frames", per_epoch), ("stored_frames", int(stored) // 2)):
        cfg = load_config(SMOKE, [f"train.epoch_unit={unit}"])
        assert BatchSource.from_config([str(main_ds)], cfg).steps_per_epoch() == want
    run = tmp_path / "run"
    r = train_cli("--shards", main_ds, "--config", SMOKE, "--output", run, "--quiet", "train.epoch_unit=source_frames",
                  f"train.epochs={12 / per_epoch!r}", f"optim.warmup_epochs={4 / per_epoch!r}",
                  "train.checkpoint_every=100", "train.maps_every=100")
    assert r.returncode == 0, r.stderr
    assert f"clips/epoch (source_frames) = {per_epoch:,} steps/epoch of 2 x 1 clips" in r.stderr
    assert "= 12 steps (24 clips); at an assumed 100 clips/s/GPU:" in r.stderr
    assert "measured " in r.stderr and "clips/s/GPU: the whole run takes" in r.stderr
    recs = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    lrs = [rec["lr"] for rec in recs]
    # warm-up: 4 steps, in the same unit; np.linspace(0, base, 4) reaches the base lr at step 3, as DINO
    assert len(recs) == 12 and int(np.argmax(lrs)) in (3, 4) and lrs[3] == pytest.approx(lrs[4]) and lrs[0] == 0.0
    assert recs[-1]["epoch"] == pytest.approx(12 / per_epoch)
