"""`dora-data fetch` without a network: one line at once, exit 2, no empty folders; a single host that does
not resolve fails its videos at once (no retry waits) while the others download."""

from __future__ import annotations

import shutil

import pytest

from tests.conftest import run_cli
from tests.httpserver import FileServer

NOWHERE = "http://nonexistent.invalid"  # RFC 6761: never resolves, with or without a network


def catalog(path, rows: list[tuple[str, str]]):
    path.write_text("name,id,url,city,license,notes\n" + "".join(f"{n},,{u},Somewhere,CC-BY-4.0,\n" for n, u in rows))
    return path


@pytest.fixture()
def server(tmp_path, bikes):
    root = tmp_path / "www"
    root.mkdir()
    shutil.copy(bikes, root / bikes.name)
    with FileServer(root) as s:
        yield s


def test_no_network_is_one_line_at_once_and_leaves_no_folder(tmp_path):
    m = catalog(tmp_path / "m.csv", [("a", f"{NOWHERE}/a.mp4"), ("b", f"{NOWHERE}/b.mp4"), ("c", f"{NOWHERE}/c.mp4")])
    # retries with minute-long waits would take many minutes: the run must not wait for any of them
    r = run_cli("fetch", "--manifest", m, "--out", tmp_path / "data" / "raw", "--quiet", "--allow-license",
                "--retries", "3", "--retry-wait", "60", timeout=150)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: no network: cannot resolve nonexistent.invalid"), lines
    assert len(lines[0]) < 250
    assert not (tmp_path / "data").exists()  # neither data/raw nor the videos' folders


def test_one_unresolvable_host_fails_its_videos_without_retries(tmp_path, server, bikes):
    m = catalog(tmp_path / "m.csv", [("gone", f"{NOWHERE}/x.mp4"), ("b", server.url("bikes.mp4"))])
    out = tmp_path / "raw"
    r = run_cli("fetch", "--manifest", m, "--out", out, "--quiet", "--allow-license", "--retries", "3",
                "--retry-wait", "60", timeout=150)
    errors = [x for x in r.stderr.splitlines() if x.startswith("error:")]
    assert r.returncode == 2 and "1 downloaded" in r.stdout and "1 failed" in r.stdout, r.stderr
    assert len(errors) == 1 and errors[0].endswith("; check the URL"), errors
    assert errors[0].startswith(f"error: gone: cannot resolve the host nonexistent.invalid of {NOWHERE}/x.mp4 (")
    assert (out / "b" / "bikes.mp4").read_bytes() == bikes.read_bytes()
    assert not (out / "gone").exists()


def test_a_failed_download_says_it_in_a_short_line_and_leaves_no_empty_folder(tmp_path):
    m = catalog(tmp_path / "m.csv", [("refused", "http://127.0.0.1:9/none.mp4")])
    r = run_cli("fetch", "--manifest", m, "--out", tmp_path / "raw", "--quiet", "--allow-license", "--retries", "0")
    errors = [x for x in r.stderr.splitlines() if x.startswith("error:")]
    assert r.returncode == 2 and len(errors) == 1 and "after 1 attempts" in errors[0]
    assert len(errors[0]) < 300 and "caused by" not in errors[0], errors[0]
    assert not (tmp_path / "raw" / "refused").exists()
