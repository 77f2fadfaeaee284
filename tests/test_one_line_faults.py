"""Every command that writes, walked through the faults a new user meets: a read-only output folder, a
full disk (a real tmpfs with one page left) and a text file given as a checkpoint. Each must end with
one `error:` line and exit status 2, no traceback, and nothing half-written under a final name.

The mechanism under test is shared (pipeline/files/outdir.py claims outputs before work; the command
groups turn disk-full and not-writable OSErrors into one line; pipeline/errors.py), so one table of
commands covers `dora-data`, `dora-train` and `dora-eval` alike.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import shutil
import signal
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
from PIL import Image

from tests.conftest import fresh_dir, run_entry
from tests.evaldata import eval_inputs, one_error_line

PAGE = 4096


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, carphone) -> dict[str, Path]:
    return eval_inputs(tmp_path_factory.mktemp("faults"), carphone)


# name -> (program, argv given the inputs and the output folder). Every command that writes a file.
Argv = Callable[[dict[str, Path], Path], list]
COMMANDS: dict[str, tuple[str, Argv]] = {
    "shard": ("dora-data", lambda i, o: ["shard", i["video"], "--out", o, "--clip-frames", "4",
                                         "--clip-stride-s", "0.5", "--workers", "1", "--quiet"]),
    "analyze": ("dora-data", lambda i, o: ["analyze", i["video"], "--out", o, "--fps", "2", "--quiet"]),
    "clips --grid": ("dora-data", lambda i, o: ["clips", i["ds"], "--n", "2", "--grid", o / "clips.png"]),
    "train": ("dora-train", lambda i, o: ["--shards", i["ds"], "--config", "smoke", "--output", o, "--quiet",
                                          "train.epochs=0"]),
    "export": ("dora-train", lambda i, o: ["export", i["ckpt"], "--to", "timm", o / "vit.pth"]),
    "attention": ("dora-eval", lambda i, o: ["attention", i["ckpt"], i["image"], "--out", o, "--size", "64"]),
    "tracking": ("dora-eval", lambda i, o: ["tracking", i["ckpt"], "--shards", i["ds"], "--out", o, "--n", "1"]),
    "davis": ("dora-eval", lambda i, o: ["davis", i["ckpt"], "--davis", i["davis"], "--out", o, "--quiet",
                                         "--short-side", "64", "--multiple", "16"]),
    "discovery": ("dora-eval", lambda i, o: ["discovery", i["ckpt"], "--voc", i["voc"], "--out", o, "--quiet"]),
    "knn": ("dora-eval", lambda i, o: ["knn", i["ckpt"], "--data", i["images"], "--out", o, "--quiet",
                                       "--resize", "32", "--crop", "32", "--k", "3", "--decoder", "torch"]),
    "knn --dump-features": ("dora-eval", lambda i, o: [
        "knn", i["ckpt"], "--data", i["images"], "--out", fresh_dir() / "knn", "--dump-features", o / "feats",
        "--quiet", "--resize", "32", "--crop", "32", "--k", "3", "--decoder", "torch"]),
    "linear": ("dora-eval", lambda i, o: ["linear", i["ckpt"], "--data", i["images"], "--out", o, "--quiet",
                                          "--epochs", "1", "--n-last-blocks", "2", "--resize", "32", "--crop", "32",
                                          "--decoder", "torch"]),
}
# Commands that read a checkpoint, and where it goes in their argv.
WITH_CHECKPOINT = ["export", "attention", "tracking", "davis", "discovery", "knn", "linear"]


def _run(name: str, inputs: dict[str, Path], out: Path, **kw) -> subprocess.CompletedProcess:
    prog, argv = COMMANDS[name]
    return run_entry(prog, *argv(inputs, out), timeout=900, **kw)


def _mount_tmpfs(where: Path, size: int) -> bool:
    where.mkdir(parents=True, exist_ok=True)
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                          capture_output=True).returncode == 0


@contextlib.contextmanager
def read_only_folder() -> Iterator[Path]:
    """An empty folder on a read-only file system (a tmpfs remounted read-only; without mounts, as a
    non-root user, a folder without write permission)."""
    base = fresh_dir() / "ro"
    if _mount_tmpfs(base, 1 << 20):
        subprocess.run(["mount", "-o", "remount,ro", str(base)], check=True)
        try:
            yield base
        finally:
            subprocess.run(["umount", str(base)], check=False)
    elif os.geteuid() != 0:
        base.chmod(0o555)
        yield base
    else:
        pytest.skip("root without permission to mount a tmpfs: cannot make a folder read-only here")


@contextlib.contextmanager
def full_disk() -> Iterator[tuple[Path, Callable[[], None] | None]]:
    """(an output folder, a preexec_fn): a folder on a real tmpfs filled up to one free page (the lock file
    takes it), so the first real write of a command fails with ENOSPC; where mounting is not allowed, a
    4 kB file size limit on the command instead (EFBIG, which counts as a full disk)."""
    base = fresh_dir() / "full"
    if not _mount_tmpfs(base, 8 << 20):
        def limit() -> None:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (PAGE, PAGE))

        yield base / "out", limit
        return
    try:
        st = os.statvfs(base)
        with open(base / ".filler", "wb") as f:
            f.write(bytes(st.f_bavail * st.f_frsize - PAGE))
        yield base / "out", None
    finally:
        subprocess.run(["umount", str(base)], check=False)


@pytest.mark.parametrize("name", list(COMMANDS))
def test_a_read_only_output_folder_is_one_line_before_any_work(inputs, name):
    with read_only_folder() as ro:
        r = _run(name, inputs, ro / "out")
        line = one_error_line(r)
        assert "cannot" in line and "ro/out" in line, line
        assert not any(ro.iterdir())


def _complete(path: Path) -> None:
    """A file under a final name is whole: PNGs decode, JSON parses, checkpoints load."""
    if path.suffix == ".png":
        Image.open(path).load()
    elif path.suffix == ".json":
        json.loads(path.read_text())
    elif path.suffix == ".pth":
        torch.load(path, map_location="cpu", weights_only=False)


@pytest.mark.parametrize("name", list(COMMANDS))
def test_a_full_disk_is_one_line_and_leaves_nothing_half_written(inputs, name):
    with full_disk() as (out, limit):
        r = _run(name, inputs, out, preexec_fn=limit)
        line = one_error_line(r)
        assert "disk full" in line, line
        if out.exists():
            for p in out.rglob("*"):
                assert ".tmp" not in p.name, p
                if p.is_file():
                    _complete(p)


@pytest.mark.parametrize("name", WITH_CHECKPOINT)
def test_a_text_file_as_checkpoint_is_one_line(inputs, name):
    text_inputs = {**inputs, "ckpt": inputs["text"]}
    out = fresh_dir() / "out"
    line = one_error_line(_run(name, text_inputs, out))
    assert "model.pth: not a torch checkpoint" in line, line
    assert not out.exists() or not any(out.iterdir())


@pytest.mark.parametrize("how", ["--resume", "model.init="])
def test_a_text_file_as_training_checkpoint_is_one_line(inputs, how):
    args = ["--resume", inputs["text"]] if how == "--resume" else [f"model.init={inputs['text']}"]
    r = run_entry("dora-train", "--shards", inputs["ds"], "--config", "smoke", "--output", "runs/x", "--quiet",
                  "train.epochs=0", *args)
    assert "model.pth: not a torch checkpoint" in one_error_line(r)


def test_a_missing_frame_table_is_one_line(inputs, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(inputs["ds"], broken)
    for table in (broken / "frames").glob("*.npz"):
        table.unlink()
    for prog, argv in (("dora-data", ["verify", broken]), ("dora-data", ["clips", broken, "--n", "1"]),
                       ("dora-train", ["--shards", broken, "--config", "smoke", "--quiet", "train.epochs=0"]),
                       ("dora-eval", ["tracking", inputs["ckpt"], "--shards", broken, "--n", "1"])):
        line = one_error_line(run_entry(prog, *argv))
        assert "frame table is missing" in line and "shard" in line, (prog, argv, line)


def test_an_output_under_a_regular_file_is_refused_before_work(inputs):
    cwd = fresh_dir()
    (cwd / "results").write_text("a file, not a folder\n")
    for name in ("knn", "davis", "linear", "train", "export", "analyze"):
        line = one_error_line(_run(name, inputs, Path("results") / "sub", cwd=cwd))
        assert "cannot write the output folder, results is a file" in line, (name, line)
