"""Shared fixtures: real sample videos, videos with known cuts, and shard folders made from them."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from pipeline.video.samples import sample_video
from tests.videos import make_concat

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent  # the venv's bin: `pip install -e .` put the entry points there
_CWD_BASE: list[Path] = []  # set once per session by the autouse fixture below


@pytest.fixture(scope="session", autouse=True)
def _cwd_base(tmp_path_factory) -> Path:
    """Where the fresh working folders of CLI runs are made (cleaned up by pytest like tmp_path)."""
    _CWD_BASE[:] = [tmp_path_factory.mktemp("cwd")]
    return _CWD_BASE[0]


def fresh_dir() -> Path:
    """A new empty folder, as a person would open a terminal in."""
    base = _CWD_BASE[0] if _CWD_BASE else None
    return Path(tempfile.mkdtemp(prefix="run-", dir=base))


def entry_point(prog: str) -> list[str]:
    """The installed console script `prog` (dora-data, dora-train, dora-eval) as an argv prefix."""
    path = BIN / prog
    assert path.exists(), f"{path} is missing: run `pip install -e .` in {ROOT}"
    return [str(path)]


def cli_env(env: dict | None = None) -> dict:
    """The environment of a CLI run: this checkout's code first on the path (the entry points import it)."""
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path, **(env or {})}


def run_entry(prog: str, *args, cwd: Path | str | None = None, timeout: float = 600, env: dict | None = None,
              **kw) -> subprocess.CompletedProcess:
    """Run the installed command `prog ARGS` as a person types it: a separate process (real exit codes,
    real stderr) whose working folder is `cwd`, by default a fresh empty temporary folder."""
    return subprocess.run([*entry_point(prog), *map(str, args)], cwd=cwd or fresh_dir(), capture_output=True,
                          text=True, timeout=timeout, env=cli_env(env), **kw)


def run_cli(*args, **kw) -> subprocess.CompletedProcess:
    """`dora-data ARGS` (see run_entry)."""
    return run_entry("dora-data", *args, **kw)


def start_cli(prog: str, *args, cwd: Path | str | None = None, **kw) -> subprocess.Popen:
    """`prog ARGS` started in the background (for kill -9 and concurrency tests), output discarded."""
    kw.setdefault("stdout", subprocess.DEVNULL)
    kw.setdefault("stderr", subprocess.DEVNULL)
    env = cli_env(kw.pop("env", None))
    return subprocess.Popen([*entry_point(prog), *map(str, args)], cwd=cwd or fresh_dir(), env=env, **kw)


def folder_digest(folder: Path) -> dict[str, str]:
    """sha256 of every file under a shard folder (relative names), the work folder and the runs' logs/ excluded:
    what must be byte-identical however the folder was made (parts, kills, reruns)."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*"))
            if p.is_file() and not {".work", "logs"} & set(p.relative_to(folder).parts)}


def kill_when(proc: subprocess.Popen, ready, timeout: float = 300, poll: float = 0.005) -> None:
    """kill -9 `proc` as soon as `ready()` holds; fails if the process ended first or `timeout` passed."""
    deadline = time.time() + timeout
    while not ready():
        assert proc.poll() is None, "the run ended before it could be killed"
        assert time.time() < deadline, f"not ready to be killed after {timeout} s"
        time.sleep(poll)
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate()


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
    from pipeline.dataset.reader import Dataset

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


@pytest.fixture(scope="session")
def s3():
    """A real S3 API (moto's server) on loopback, with signed requests enforced: tests/s3server.py."""
    from tests.s3server import moto_s3

    server = moto_s3()
    yield server
    server.stop()
