"""Shared fixtures: real sample videos, videos with known cuts, and shard folders made from them."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.demo import sample_video
from tests.videos import make_concat

ROOT = Path(__file__).resolve().parents[1]


def run_cli(*args: str, timeout: float = 600, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run `dora-data ARGS` as a separate process (real exit codes, real stderr)."""
    return subprocess.run([sys.executable, "-m", "pipeline.cli", *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, **(env or {})})


@pytest.fixture(scope="session")
def bikes() -> Path:
    return sample_video("bikes.mp4")


@pytest.fixture(scope="session")
def carphone() -> Path:
    return sample_video("carphone_pristine.mp4")


@pytest.fixture(scope="session")
def bbb() -> Path:
    return sample_video("bigbuckbunny.mp4")


@pytest.fixture(scope="session")
def concat(tmp_path_factory) -> tuple[Path, list[float]]:
    """H.264 (with B-frames), 25 fps, five shots joined at known times."""
    path = tmp_path_factory.mktemp("videos") / "concat.mp4"
    return path, make_concat(path)


@pytest.fixture(scope="session")
def concat_vfr(tmp_path_factory) -> tuple[Path, list[float]]:
    """The same shots with variable frame durations (30-60 ms)."""
    path = tmp_path_factory.mktemp("videos") / "concat_vfr.mp4"
    return path, make_concat(path, vfr=True)


def damaged_copy(src: Path, dst: Path, video: str, rows, n_bytes: int) -> Path:
    """A copy of shard folder `src` in which the last n_bytes of the given frames' JPEGs are zeros
    (tar structure intact: only the JPEG data is damaged). Returns the damaged shard paths' folder."""
    from pipeline.manifest import Dataset

    shutil.copytree(src, dst)
    ds = Dataset(dst)
    tab = ds.table(video)
    for row in rows:
        path = ds.shard_path(int(tab.shard[row]))
        end = int(tab.offset[row]) + int(tab.size[row])
        with open(path, "r+b") as f:
            f.seek(end - n_bytes)
            f.write(bytes(n_bytes))
    return dst


# Options of the main shard folder used by many tests: several units per video, small shards.
MAIN_OPTS = ["--blur-faces", "--segment-s", "3", "--clip-frames", "4", "--clip-stride-s", "0.5",
             "--shard-size", "3MB", "--workers", "2", "--quiet"]


@pytest.fixture(scope="session")
def main_inputs(bikes, carphone, concat, concat_vfr) -> list[Path]:
    return [bikes, carphone, concat[0], concat_vfr[0]]


@pytest.fixture(scope="session")
def main_ds(tmp_path_factory, main_inputs) -> Path:
    out = tmp_path_factory.mktemp("shards") / "main"
    r = run_cli("shard", *main_inputs, "--out", out, *MAIN_OPTS)
    assert r.returncode == 0, r.stderr
    return out
