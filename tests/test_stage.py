"""Shard folders on object storage read through the verified local cache (pipeline/store/stage.py): real
CLI processes against a real S3 API (moto's server, signed requests enforced; tests/s3server.py)."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from pipeline.store import cache_path
from tests.conftest import cli_env, entry_point, fresh_dir, kill_when, run_cli, run_entry
from tests.evaldata import one_error_line

OPTS = ["--clip-frames", "4", "--clip-stride-s", "0.5", "--window-s", "2", "--fps", "25", "--quality", "95",
        "--shard-size", "500KB", "--workers", "1", "--quiet"]


def upload(s3, local: Path, url: str) -> None:
    """Copy a finished folder to `url` as an upload would: every file, dataset.json last."""
    fs = s3.fs()
    files = sorted(p for p in local.rglob("*") if p.is_file() and p.name != "dataset.json")
    for p in [*files, local / "dataset.json"]:
        fs.put_file(str(p), f"{url}/{p.relative_to(local).as_posix()}")


def files_of(root: Path) -> dict[str, bytes]:
    """rel path -> bytes of every file of a shard folder (the cache's own `.staged.json` left out)."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*")
            if p.is_file() and p.name != ".staged.json"}


def listed(root: Path) -> dict[str, bytes]:
    """rel path -> bytes of dataset.json and every file its manifest lists (what a copy holds; not logs/)."""
    rels = ["dataset.json", *json.loads((root / "dataset.json").read_text())["files"]]
    return {rel: (root / rel).read_bytes() for rel in rels}


@pytest.fixture(scope="module")
def folder(tmp_path_factory, bikes, carphone) -> Path:
    """A finished folder of 16 small shards (about 20 MB), with its `files` manifest."""
    out = tmp_path_factory.mktemp("stage") / "ds"
    r = run_cli("shard", bikes, carphone, "--out", out, *OPTS)
    assert r.returncode == 0, r.stderr
    assert json.loads((out / "dataset.json").read_text())["files"]
    return out


@pytest.fixture()
def url(s3, folder) -> str:
    u = s3.url("ds")
    upload(s3, folder, u)
    return u


def copy_in(cwd: Path, url: str) -> Path:
    return cwd / cache_path(url, "cache")


def test_verify_and_clips_read_a_url_through_an_identical_local_copy(s3, folder, url, tmp_path):
    cwd = fresh_dir()
    r = run_cli("verify", url, "--cache-dir", "cache", cwd=cwd, env=s3.env)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("OK:")
    n = len(listed(folder)) - 1  # every file but dataset.json
    assert f"{n} file(s) downloaded" in r.stderr
    copy = copy_in(cwd, url)
    assert files_of(copy) == listed(folder)
    secret = s3.env["AWS_SECRET_ACCESS_KEY"]
    assert all(secret.encode() not in p.read_bytes() for p in cwd.rglob("*") if p.is_file())
    assert secret not in r.stdout + r.stderr
    # the same clips as from the local folder; the default cache folder under $XDG_CACHE_HOME
    want = run_cli("clips", folder, "--n", "6")
    env = {**s3.env, "DORA_CACHE": "", "XDG_CACHE_HOME": str(tmp_path / "xdg"), "HOME": str(tmp_path / "home")}
    got = run_cli("clips", url, "--n", "6", env=env)
    assert want.returncode == got.returncode == 0, got.stderr
    assert got.stdout == want.stdout and len(got.stdout.splitlines()) == 6
    assert files_of(cache_path(url, tmp_path / "xdg" / "dora-wt" / "shards")) == listed(folder)
    # a second run trusts the verified files (no download, nothing re-hashed) and says so
    again = run_cli("verify", url, "--cache-dir", "cache", cwd=cwd, env=s3.env)
    assert again.returncode == 0 and "0 file(s) downloaded" in again.stderr and f"{n} already there" in again.stderr


def test_damaged_files_in_the_cache_are_repaired_and_named(s3, folder, url):
    cwd = fresh_dir()
    assert run_cli("verify", url, "--cache-dir", "cache", cwd=cwd, env=s3.env).returncode == 0
    shards = copy_in(cwd, url) / "shards"
    flipped, cut, partial = shards / "shard-000001.tar", shards / "shard-000002.tar", shards / "shard-000003.tar"
    size = flipped.stat().st_size
    with open(flipped, "r+b") as f:  # same size, other bytes in the middle
        f.seek(size // 2)
        data = f.read(64)
        f.seek(size // 2)
        f.write(bytes(b ^ 0xFF for b in data))
    os.truncate(cut, cut.stat().st_size // 3)
    half = partial.read_bytes()[: partial.stat().st_size // 2]
    partial.unlink()  # a killed download whose .part holds wrong bytes: resumed, found wrong, fetched again
    partial.with_name(partial.name + ".part").write_bytes(bytes(len(half)))
    (shards / "shard-999999.tar").write_bytes(b"not listed")
    r = run_cli("verify", url, "--cache-dir", "cache", cwd=cwd, env=s3.env)
    assert r.returncode == 0, r.stderr
    assert "repaired shards/shard-000001.tar (sha256 differed)" in r.stderr
    assert "repaired shards/shard-000002.tar (size differed)" in r.stderr
    assert "3 file(s) downloaded" in r.stderr and "1 no longer listed removed" in r.stderr
    assert files_of(copy_in(cwd, url)) == listed(folder)


def test_kill_9_while_staging_then_the_same_command_resumes(s3, folder, url):
    cwd = fresh_dir()
    copy = copy_in(cwd, url)
    args = [*entry_point("dora-data"), "verify", url, "--cache-dir", "cache"]
    proc = subprocess.Popen(args, cwd=cwd, env=cli_env(s3.env), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    kill_when(proc, lambda: any(copy.rglob("*.part")), timeout=120, poll=0.002)
    assert proc.returncode == -signal.SIGKILL, "staging finished before it could be killed"
    assert not (copy / "dataset.json").exists()  # an incomplete copy never looks finished
    r = run_cli("verify", url, "--cache-dir", "cache", cwd=cwd, env=s3.env)
    assert r.returncode == 0, r.stderr
    assert files_of(copy) == listed(folder)
    assert not list(copy.rglob("*.part"))


def test_two_stagers_of_one_url_download_it_once(s3, folder, url):
    cwd = fresh_dir()
    lock = cwd / cache_path(url, "cache")
    lock.parent.mkdir(parents=True)
    lock = lock.with_name(lock.name + ".lock")
    holder = f"pid {os.getpid()} ({socket.gethostname()})"
    fd = os.open(lock, os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)  # as a first stager would: both commands start while it holds the lock
    os.write(fd, holder.encode())
    logs = [cwd / f"err{i}.txt" for i in range(2)]
    procs = []
    for log in logs:
        with open(log, "w") as f:
            procs.append(subprocess.Popen([*entry_point("dora-data"), "verify", url, "--cache-dir", "cache"],
                                          cwd=cwd, env=cli_env(s3.env), stdout=subprocess.DEVNULL, stderr=f))
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not all(log.exists() and "waiting" in log.read_text() for log in logs):
            time.sleep(0.05)
    finally:
        os.ftruncate(fd, 0)
        os.close(fd)
    assert [p.wait(300) for p in procs] == [0, 0]
    err = [log.read_text() for log in logs]
    want = f"waiting for {holder} to finish staging {url}"
    assert all(e.count(want) == 1 for e in err), err
    n = len(listed(folder)) - 1
    assert sorted(f"{n} file(s) downloaded" in e for e in err) == [False, True], err
    assert sum("0 file(s) downloaded" in e for e in err) == 1
    assert files_of(copy_in(cwd, url)) == listed(folder)


def test_wrong_bucket_credentials_or_folder_are_one_line_and_leak_no_secret(s3, folder, url):
    cwd = fresh_dir()
    line = one_error_line(run_cli("verify", "s3://no-such-bucket-dora/ds", "--cache-dir", "cache", cwd=cwd,
                                  env=s3.env))
    assert "no-such-bucket-dora" in line and "bucket does not exist" in line
    secret = "Wr0ngSecretKeyForDoraTests0123456789abcd"
    r = run_cli("clips", url, "--cache-dir", "cache", cwd=cwd, env={**s3.env, "AWS_SECRET_ACCESS_KEY": secret})
    line = one_error_line(r)
    assert url in line and "access denied" in line
    assert secret not in r.stdout + r.stderr
    assert all(secret.encode() not in p.read_bytes() for p in cwd.rglob("*") if p.is_file())
    unfinished = s3.url("unfinished")
    s3.fs().put_file(str(folder / "shards" / "shard-000000.tar"), f"{unfinished}/shards/shard-000000.tar")
    line = one_error_line(run_cli("verify", unfinished, "--cache-dir", "cache", cwd=cwd, env=s3.env))
    assert line == (f"error: {unfinished}: no dataset.json, not a finished shard folder; run "
                    f"`dora-data index {unfinished}` after every part finished")


def test_train_on_a_url_records_the_url_and_resumes_with_the_same_command(s3, url):
    import torch

    cwd = fresh_dir()
    args = ["--shards", url, "--cache-dir", "cache", "--config", "smoke", "--output", "run", "--quiet",
            "train.epochs=0.03", "train.checkpoint_every=2"]
    r = run_entry("dora-train", *args, cwd=cwd, env=s3.env)
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    assert summary["steps"] >= 2
    state = torch.load(summary["checkpoint"] if Path(summary["checkpoint"]).is_absolute()
                       else cwd / summary["checkpoint"], map_location="cpu", weights_only=False)
    assert state["shards"] == [url]
    again = run_entry("dora-train", *args, cwd=cwd, env=s3.env)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout.strip().splitlines()[-1])["steps"] == summary["steps"]
    assert "0 file(s) downloaded" in again.stderr


def test_a_folder_indexed_before_checksums_is_checked_by_size_with_one_warning(s3, folder, tmp_path):
    old = tmp_path / "old"
    shutil.copytree(folder, old)
    index = json.loads((old / "dataset.json").read_text())
    del index["files"]
    (old / "dataset.json").write_text(json.dumps(index))
    u = s3.url("old")
    upload(s3, old, u)
    cwd = fresh_dir()
    r = run_cli("verify", u, "--cache-dir", "cache", cwd=cwd, env=s3.env)
    assert r.returncode == 0, r.stderr
    assert r.stderr.count("predates checksums") == 1
    copy = copy_in(cwd, u)
    assert files_of(copy) == {**listed(folder), "dataset.json": (old / "dataset.json").read_bytes()}
    shard = copy / "shards" / "shard-000004.tar"
    os.truncate(shard, 100)
    r = run_cli("clips", u, "--cache-dir", "cache", cwd=cwd, env=s3.env)
    assert r.returncode == 0 and "repaired shards/shard-000004.tar (size differed)" in r.stderr, r.stderr
    assert shard.read_bytes() == (folder / "shards" / "shard-000004.tar").read_bytes()


def test_a_part_file_is_continued_not_fetched_again(s3, folder, url):
    cwd = fresh_dir()
    assert run_cli("verify", url, "--cache-dir", "cache", cwd=cwd, env=s3.env).returncode == 0
    shard = copy_in(cwd, url) / "shards" / "shard-000005.tar"
    data = shard.read_bytes()
    shard.unlink()  # as a download killed half-way leaves it
    shard.with_name(shard.name + ".part").write_bytes(data[: len(data) // 2])
    r = run_cli("verify", url, "--cache-dir", "cache", cwd=cwd, env=s3.env)
    assert r.returncode == 0, r.stderr
    assert f"1 file(s) downloaded ({(len(data) - len(data) // 2) / 1e6:.1f} MB)" in r.stderr
    assert shard.read_bytes() == data
