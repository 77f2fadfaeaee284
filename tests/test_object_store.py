"""`dora-data shard --out s3://...` and `index s3://...` against a real S3 API on loopback (moto's server).

The remote folder must end byte-identical to a local run; a `kill -9` at any moment (while units are
made and uploaded, while the finished folder is published) must leave nothing the commit points count
that is not whole, and the same command run again must finish the job. Storage faults are one line.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from pipeline.format import expected_files
from pipeline.store import redact
from tests.conftest import fresh_dir, kill_when, run_cli, start_cli

OPTS = ["--segment-s", "3", "--fps", "10", "--short-side", "96", "--shard-size", "40KB", "--quiet"]  # ~10 shards


def remote_tree(s3, url: str) -> dict[str, bytes]:
    """Every object under `url`, by its path relative to it."""
    fs, root = s3.fs(), url.removeprefix("s3://")
    return {p[len(root) + 1:]: fs.cat_file(p) for p in fs.find(root)}


def local_tree(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and not p.relative_to(folder).as_posix().startswith("logs/")}


def without_logs(tree: dict[str, bytes]) -> dict[str, bytes]:
    return {k: v for k, v in tree.items() if not k.startswith("logs/")}


def committed_state_is_whole(tree: dict[str, bytes]) -> None:
    """What the commit points count is complete: every unit marker's frames, and every file dataset.json lists."""
    for rel, data in tree.items():
        if rel.startswith(".work/") and Path(rel).name.startswith("u") and rel.endswith(".json"):
            unit = json.loads(data)
            blob = tree.get(rel[:-len(".json")] + ".jpg.bin")
            end = max((f[2] + f[3] for f in unit["frames"]), default=0)
            assert blob is not None and len(blob) == end, f"{rel}: marker without its whole frames"
    if "dataset.json" in tree:
        for rel, want in expected_files(json.loads(tree["dataset.json"])).items():
            assert rel in tree and len(tree[rel]) == want["bytes"], f"dataset.json lists {rel}, not there whole"


@pytest.fixture(scope="module")
def sources(tmp_path_factory, bikes, carphone) -> list[Path]:
    """Copies of two sample videos (deleted by one test, to show `index` does not read the sources)."""
    folder = tmp_path_factory.mktemp("sources")
    return [Path(shutil.copy2(v, folder / v.name)) for v in (bikes, carphone)]


@pytest.fixture(scope="module")
def reference(sources) -> dict[str, bytes]:
    """The same inputs sharded into a local folder by one whole run."""
    cwd = fresh_dir()
    r = run_cli("shard", *sources, "--out", "ref", *OPTS, cwd=cwd)
    assert r.returncode == 0, r.stderr
    return local_tree(cwd / "ref")


def test_round_trip_default_work_dir(s3, sources, reference, tmp_path):
    cache = tmp_path / "cache"
    url = s3.url("round")
    env = {**s3.env, "XDG_CACHE_HOME": str(cache)}
    r = run_cli("shard", *sources, "--out", url, *OPTS, "--workers", "2", env=env)
    assert r.returncode == 0, r.stderr
    assert f"{url}/dataset.json: 2 videos" in r.stdout
    assert without_logs(remote_tree(s3, url)) == reference  # no .work left, nothing else
    assert (cache / "dora-wt" / "work" / "s3" / url.removeprefix("s3://")).is_dir()  # the default --work-dir
    again = run_cli("shard", *sources, "--out", url, *OPTS, env=env)  # nothing to do: says so, changes nothing
    assert again.returncode == 0 and "already in" in again.stdout
    assert without_logs(remote_tree(s3, url)) == reference


def without_source_paths(tree: dict[str, bytes]) -> dict[str, bytes]:
    """The tree with dataset.json's per-node fields (the source's path and mtime) taken out."""
    index = json.loads(tree["dataset.json"])
    for v in index["videos"]:
        v.pop("source"), v.pop("source_mtime_ns")
    return {**without_logs(tree), "dataset.json": json.dumps(index, sort_keys=True).encode()}


def test_parts_on_separate_machines_then_index_without_sources(s3, sources, tmp_path):
    """Each part works in its own folder on its own copy of the videos (another path, another mtime: its
    node's disk); `index` runs in a fourth folder, where the videos are not."""
    cwd = fresh_dir()
    assert run_cli("shard", *sources, "--out", "ref", *OPTS, cwd=cwd).returncode == 0
    want = without_source_paths(local_tree(cwd / "ref"))
    url = s3.url("parts")
    for i in range(3):
        (tmp_path / f"node{i}").mkdir()
        copies = [Path(shutil.copy(v, tmp_path / f"node{i}" / v.name)) for v in sources]
        for c in copies:
            os.utime(c, (1e9 + i, 1e9 + i))
        r = run_cli("shard", *copies, "--out", url, *OPTS, "--part", f"{i}/3", "--work-dir", f"node{i}", cwd=cwd,
                    env=s3.env)
        assert r.returncode == 0, r.stderr
        assert f"run `dora-data index {url}`" in r.stdout
        for c in copies:
            c.unlink()
    assert "dataset.json" not in remote_tree(s3, url)
    r = run_cli("index", url, "--work-dir", "indexer", cwd=cwd, env=s3.env)
    assert r.returncode == 0, r.stderr
    assert without_source_paths(remote_tree(s3, url)) == want


def test_videos_added_from_another_machine(s3, sources):
    """A finished folder on the store gets a second video from a fresh work folder (a new node), as a local
    folder would; `index` from a third fresh folder then has nothing to do and changes nothing."""
    cwd = fresh_dir()
    for v in sources:
        assert run_cli("shard", v, "--out", "ref", *OPTS, cwd=cwd).returncode == 0
    url = s3.url("added")
    for v, node in zip(sources, ("nodeA", "nodeB"), strict=True):
        r = run_cli("shard", v, "--out", url, *OPTS, "--work-dir", node, cwd=cwd, env=s3.env)
        assert r.returncode == 0, r.stderr
    assert without_logs(remote_tree(s3, url)) == local_tree(cwd / "ref")
    r = run_cli("index", url, "--work-dir", "nodeC", cwd=cwd, env=s3.env)
    assert r.returncode == 0, r.stderr
    assert without_logs(remote_tree(s3, url)) == local_tree(cwd / "ref")


def test_urls_lose_their_secrets_in_messages():
    assert redact("s3://key:secret@bucket/p") == "s3://bucket/p"
    assert redact("see https://acct.blob.core.windows.net/c/x?sv=1&sig=SECRET now") == \
        "see https://acct.blob.core.windows.net/c/x now"
    assert redact("endpoint http://user:pw@minio:9000/ failed") == "endpoint http://minio:9000/ failed"


def _kill_when(proc, s3, url: str, ready, timeout: float = 120) -> dict[str, bytes]:
    """kill -9 `proc` as soon as the remote object names satisfy `ready`; returns the tree after the kill."""
    fs, root = s3.fs(), url.removeprefix("s3://")

    def names() -> set[str]:
        fs.invalidate_cache()
        return {p[len(root) + 1:] for p in fs.find(root)}

    kill_when(proc, lambda: ready(names()), timeout, poll=0.05)
    return remote_tree(s3, url)


def test_kill_during_unit_uploads_and_publication_then_rerun(s3, sources, reference):
    """kill -9 after the first unit reached S3, then again while the finished folder is being published;
    each time what the commit points count is whole, and the same command finishes the folder."""
    url, cwd = s3.url("killed"), fresh_dir()
    args = ["shard", *sources, "--out", url, *OPTS, "--workers", "1", "--work-dir", "work"]
    proc = start_cli("dora-data", *args, cwd=cwd, env=s3.env)
    tree = _kill_when(proc, s3, url, lambda t: any(k.endswith("u00000.json") for k in t))
    assert proc.returncode == -9
    committed_state_is_whole(tree)
    assert "dataset.json" not in tree
    r = run_cli(*args[:-2], "--shard-size", "20KB", "--work-dir", "work2", cwd=cwd, env=s3.env)  # other options
    assert r.returncode == 2 and "other options" in r.stderr
    proc = start_cli("dora-data", *args, cwd=cwd, env=s3.env)
    tree = _kill_when(proc, s3, url, lambda t: any(k.startswith("shards/") for k in t))
    assert proc.returncode == -9
    committed_state_is_whole(tree)
    r = run_cli(*args, cwd=cwd, env=s3.env)
    assert r.returncode == 0, r.stderr
    assert without_logs(remote_tree(s3, url)) == reference


def test_rerun_from_another_machine_resumes_remote_units(s3, sources, reference):
    """A part killed on one node is finished on another: units already on S3 are not made again."""
    url, cwd = s3.url("moved"), fresh_dir()
    args = ["shard", *sources, "--out", url, *OPTS, "--workers", "1"]
    proc = start_cli("dora-data", *args, "--work-dir", "nodeA", cwd=cwd, env=s3.env)
    tree = _kill_when(proc, s3, url, lambda t: sum(k.endswith(".jpg.bin") for k in t) >= 2)
    made = {k: v for k, v in tree.items() if k.endswith(".json") and "/u" in k}
    assert made and proc.returncode == -9
    r = run_cli(*args, "--work-dir", "nodeB", cwd=cwd, env=s3.env)
    assert r.returncode == 0, r.stderr
    assert without_logs(remote_tree(s3, url)) == reference
    made_on_a = {(Path(k).parent.name, Path(k).stem) for k in made}  # (video, unit)
    log = (cwd / "nodeB" / "logs" / "shard.log").read_text()
    done_on_b = set(re.findall(r"unit (u\d+) of (\S+) done", log))
    assert done_on_b and not {(v, u) for u, v in done_on_b} & made_on_a  # B made only what S3 lacked


@pytest.mark.parametrize("fault", ["bucket", "secret", "backend"])
def test_storage_faults_are_one_line(s3, sources, fault):
    env = dict(s3.env)
    url = s3.url("faults")
    if fault == "bucket":
        url = "s3://no-such-bucket/wt"
    elif fault == "secret":
        env["AWS_SECRET_ACCESS_KEY"] = "not-the-secret-0123456789"
    else:
        url = "gs://some-bucket/wt"
    cwd = fresh_dir()
    for args in (["shard", sources[0], "--out", url, *OPTS], ["index", url]):
        r = run_cli(*args, cwd=cwd, env=env)
        assert r.returncode == 2, r.stderr
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in r.stderr, r.stderr
        assert url in lines[0]
        want = {"bucket": "bucket does not exist", "secret": "access denied", "backend": "pip install gcsfs"}[fault]
        assert want in lines[0]
        for secret in (env["AWS_SECRET_ACCESS_KEY"], s3.env["AWS_SECRET_ACCESS_KEY"]):
            assert secret not in r.stdout + r.stderr
    for p in cwd.rglob("*"):  # nothing that looks complete, and no credentials written anywhere
        assert p.name != "dataset.json"
        if p.is_file():
            assert env["AWS_SECRET_ACCESS_KEY"].encode() not in p.read_bytes()


def test_store_failing_mid_run_stops_it_and_keeps_the_work(sources):
    """The store goes away while units are made (here: its server is stopped after the first unit's marker):
    one line, exit 2, even with --keep-going (the store failed, not a video), and the units made here stay
    in the work folder for the rerun."""
    from tests.s3server import moto_s3

    server = moto_s3()  # its own server: this test stops it
    try:
        url, cwd = server.url("gone"), fresh_dir()
        proc = start_cli("dora-data", "shard", *sources, "--out", url, *OPTS, "--workers", "1", "--keep-going",
                         "--work-dir", "work", cwd=cwd, env=server.env, stderr=subprocess.PIPE, text=True)
        fs, root = server.fs(), url.removeprefix("s3://")
        deadline = time.time() + 120
        while not any(p.endswith("u00000.json") for p in fs.find(root)) and time.time() < deadline:
            assert proc.poll() is None
            time.sleep(0.05)
            fs.invalidate_cache()
        server.stop()
        err = proc.communicate(timeout=300)[1]
    finally:
        server.stop()
    assert proc.returncode == 2, err
    lines = [line for line in err.strip().splitlines() if not line.startswith("note:")]
    assert len(lines) == 1 and lines[0].startswith(f"error: {url}: ") and "failed" in lines[0], err
    made = list((cwd / "work" / ".work").rglob("u*.json"))
    assert made and all(p.with_name(p.stem + ".jpg.bin").exists() for p in made)
