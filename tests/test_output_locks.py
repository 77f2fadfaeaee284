"""`analyze` and every `dora-eval` command lock their output folder like `shard` and `train`; models that
do not fit the weights are one line; exports load without a config; worker defaults follow the cores."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pipeline.files import FolderLock
from tests.conftest import fresh_dir, run_entry
from tests.evaldata import eval_inputs, one_error_line


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, carphone) -> dict[str, Path]:
    return eval_inputs(tmp_path_factory.mktemp("locks_eval"), carphone)


def _commands(i: dict[str, Path], out: Path) -> dict[str, list]:
    small = ["--resize", "32", "--crop", "32", "--decoder", "torch", "--quiet"]
    return {
        "analyze": ["dora-data", "analyze", i["video"], "--out", out, "--fps", "2", "--quiet"],
        "attention": ["dora-eval", "attention", i["ckpt"], i["image"], "--out", out, "--size", "64"],
        "tracking": ["dora-eval", "tracking", i["ckpt"], "--shards", i["ds"], "--out", out, "--n", "1"],
        "davis": ["dora-eval", "davis", i["ckpt"], "--davis", i["davis"], "--out", out, "--quiet",
                  "--short-side", "64", "--multiple", "16"],
        "discovery": ["dora-eval", "discovery", i["ckpt"], "--voc", i["voc"], "--out", out, "--quiet"],
        "knn": ["dora-eval", "knn", i["ckpt"], "--data", i["images"], "--out", out, "--k", "3", *small],
        "linear": ["dora-eval", "linear", i["ckpt"], "--data", i["images"], "--out", out, "--epochs", "1",
                   "--n-last-blocks", "2", *small],
    }


@pytest.mark.parametrize("name", ["analyze", "attention", "tracking", "davis", "discovery", "knn", "linear"])
def test_a_second_run_on_a_held_output_folder_is_refused(inputs, name):
    """Another process (this test) holds OUT's lock as a running command would: the command stops at
    once with one line naming the holder, and writes nothing there."""
    out = fresh_dir() / "out"
    holder = FolderLock(out, "dora-eval knn").acquire()
    try:
        prog, *argv = _commands(inputs, out)[name]
        line = one_error_line(run_entry(prog, *argv))
        assert "is in use by pid" in line and str(os.getpid()) in line, line
        assert sorted(p.name for p in out.iterdir()) == [".lock"]
    finally:
        holder.release()
    r = run_entry(prog, *argv)  # free again: it runs
    assert r.returncode == 0, r.stderr[-2000:]


def test_a_model_that_does_not_fit_the_weights_isone_error_line(inputs):
    """The checkpoint is a ViT-Tiny (192 wide); --config names a ViT-S/16 (384 wide)."""
    for argv in (["knn", inputs["ckpt"], "--data", inputs["images"], "--config", "dora_vits16", "--quiet"],
                 ["attention", inputs["ckpt"], inputs["image"], "--config", "dora_vits16"],
                 ["davis", inputs["ckpt"], "--davis", inputs["davis"], "--config", "dora_vits16", "--quiet"]):
        line = one_error_line(run_entry("dora-eval", *argv))
        assert "does not fit the model built (384 wide" in line and "--config" in line, line


def test_attention_and_tracking_read_an_exports_shape_off_its_weights(inputs):
    """An export carries no config: `attention` used to build the default ViT-S/16 and fail."""
    export = inputs["root"] / "vit_tiny.pth"
    r = run_entry("dora-train", "export", inputs["ckpt"], "--to", "dino", export)
    assert r.returncode == 0, r.stderr
    cwd = fresh_dir()
    r = run_entry("dora-eval", "attention", export, inputs["image"], "--size", "64", cwd=cwd)
    assert r.returncode == 0, r.stderr[-2000:]
    assert list((cwd / "runs" / "eval").glob("attention_*.png"))


def test_worker_defaults_are_the_core_count():
    cores = min(16, len(os.sched_getaffinity(0)))
    for cmd in ("knn", "linear", "davis", "discovery"):
        r = run_entry("dora-eval", cmd, "--help")
        help_text = " ".join(r.stdout.split())
        start = help_text.index("--workers")
        assert f"[default: {cores};" in help_text[start:start + 200], (cmd, help_text[start:start + 200])
