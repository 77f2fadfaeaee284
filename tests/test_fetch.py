"""`dora-data fetch` through the real yt-dlp code path, against a real HTTP server on loopback."""

from __future__ import annotations

import hashlib
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.errors import InputError
from pipeline.fetch.catalog import BUILTIN, Entry, read_catalog
from pipeline.fetch.download import FIX_RUNTIME, js_runtime_problem, license_verdict
from tests.conftest import ROOT, cli_env, fresh_dir, run_cli, start_cli
from tests.httpserver import FileServer

WT_IDS = {"wt_amsterdam": "E07rTPgIvn0", "wt_bangkok": "hUGcHvN4mME", "wt_chiang_mai": "jyxIRzlkO_g",
          "wt_istanbul": "mA9lYWyXMYU", "wt_kuala_lumpur": "yLTycPjm0nk", "wt_singapore": "aUJl46bEWYo",
          "wt_stockholm": "Jr9x-RB4E1U", "wt_wildlife": "Q0ML5oAjX_w", "wt_venice": "fGX0Te6pFvk",
          "wt_zurich": "_NmYvuEILw4"}
FAST = ["--quiet", "--allow-license", "--retry-wait", "0"]


def test_builtin_manifest_lists_the_10_videos():
    entries = read_catalog(BUILTIN)
    assert {e.name: e.id for e in entries} == WT_IDS
    assert all(e.url == f"https://www.youtube.com/watch?v={e.id}" and e.license == "CC-BY-4.0" for e in entries)
    assert "YcI_UXfMTgo" in next(e for e in entries if e.name == "wt_wildlife").notes


@pytest.fixture()
def server(tmp_path, bikes, carphone, bbb):
    root = tmp_path / "www"
    root.mkdir()
    for p in (bikes, carphone, bbb):
        shutil.copy(p, root / p.name)
    (root / "notvideo.mp4").write_text("<html>this is not a video</html>\n" * 50)
    with FileServer(root) as s:
        yield s


def manifest(tmp_path: Path, rows: list[tuple[str, str, str]], name: str = "m.csv") -> Path:
    path = tmp_path / name
    path.write_text("name,id,url,city,license,notes\n" + "".join(f"{n},{i},{u},Somewhere,CC-BY-4.0,\n"
                                                                 for n, i, u in rows))
    return path


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_download_verify_rerun_skips_and_shard_accepts(tmp_path, server, bikes, carphone):
    """As a person types it: a fresh folder, a relative manifest, the default folders data/raw and data/wt_all."""
    cwd = tmp_path / "work"
    cwd.mkdir()
    manifest(cwd, [("city_bikes", "", server.url("bikes.mp4")), ("phone", "cp", server.url("carphone_pristine.mp4"))])
    r = run_cli("fetch", "--manifest", "m.csv", *FAST, cwd=cwd)
    assert r.returncode == 0, r.stderr
    assert "2 downloaded" in r.stdout and "Traceback" not in r.stderr
    out = cwd / "data" / "raw"
    got = out / "city_bikes" / "bikes.mp4"
    assert sha(got) == sha(bikes) and sha(out / "phone" / "cp.mp4") == sha(carphone)
    assert (out / "city_bikes" / "bikes.mp4.sha256").read_text().split()[0] == sha(bikes)
    assert json.loads((out / "city_bikes" / "bikes.info.json").read_text())["extractor"] == "generic"
    records = [json.loads(x) for x in (out / "archive.jsonl").read_text().splitlines()]
    assert [x["name"] for x in records] == ["city_bikes", "phone"] and records[0]["sha256"] == sha(bikes)
    assert [x["file"] for x in records] == ["city_bikes/bikes.mp4", "phone/cp.mp4"]
    before = len(server.log)
    r = run_cli("fetch", "--manifest", "m.csv", "--out", "data/raw", *FAST, cwd=cwd)
    assert r.returncode == 0 and "2 already there and verified" in r.stdout
    assert len(server.log) == before  # nothing requested again
    listing = run_cli("fetch", "--manifest", "m.csv", "--list", cwd=cwd)
    assert listing.returncode == 0 and listing.stdout.count("complete") == 2
    shard = run_cli("shard", "--workers", "1", "--quiet", "--clip-frames", "4", "--clip-stride-s", "0.5", cwd=cwd)
    assert shard.returncode == 0, shard.stderr
    meta = json.loads((cwd / "data" / "wt_all" / "dataset.json").read_text())
    assert sorted(v["name"] for v in meta["videos"]) == ["city_bikes", "phone"]
    assert next(v for v in meta["videos"] if v["name"] == "city_bikes")["sha256"] == sha(bikes)


def test_corrupted_download_is_fetched_again(tmp_path, server, bikes):
    m = manifest(tmp_path, [("b", "", server.url("bikes.mp4"))])
    out = tmp_path / "raw"
    assert run_cli("fetch", "--manifest", m, "--out", out, *FAST).returncode == 0
    f = out / "b" / "bikes.mp4"
    data = bytearray(f.read_bytes())
    data[1000] ^= 0xFF  # same name, same size, other bytes
    f.write_bytes(bytes(data))
    r = run_cli("fetch", "--manifest", m, "--out", out, *FAST)
    assert r.returncode == 0 and "1 downloaded" in r.stdout
    assert sha(f) == sha(bikes)


def test_dropped_connection_then_rerun_resumes(tmp_path, server, bikes):
    server.drop_after["bikes.mp4"] = (2, 200_000)  # the 2nd GET (the download) is cut at 200 kB
    m = manifest(tmp_path, [("b", "", server.url("bikes.mp4"))])
    out = tmp_path / "raw"
    r = run_cli("fetch", "--manifest", m, "--out", out, "--quiet", "--allow-license", "--retries", "0")
    assert r.returncode == 2 and "error: b: " in r.stderr and "Traceback" not in r.stderr
    assert not (out / "b" / "bikes.mp4").exists()
    part = list((out / "b").glob("*.part"))
    assert part and 0 < part[0].stat().st_size < bikes.stat().st_size
    r = run_cli("fetch", "--manifest", m, "--out", out, *FAST)
    assert r.returncode == 0, r.stderr
    assert any(x["range"] and x["range"].startswith("bytes=") and x["range"] != "bytes=0-" for x in server.log)
    assert sha(out / "b" / "bikes.mp4") == sha(bikes)


def test_kill_9_mid_download_then_rerun_gives_the_same_files(tmp_path, server, bbb):
    server.delay = 0.05  # about 1 s for Big Buck Bunny's 1 MB
    m = manifest(tmp_path, [("bunny", "", server.url("bigbuckbunny.mp4"))])
    out = tmp_path / "raw"
    proc = start_cli("dora-data", "fetch", "--manifest", m, "--out", out, *FAST)
    deadline = time.time() + 60
    while time.time() < deadline and not any(p.stat().st_size > 100_000 for p in (out / "bunny").glob("*.part")
                                             if (out / "bunny").exists()):
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / "bunny" / "bigbuckbunny.mp4").exists()
    server.delay = 0.0
    r = run_cli("fetch", "--manifest", m, "--out", out, *FAST)
    assert r.returncode == 0, r.stderr
    names = sorted(p.name for p in (out / "bunny").iterdir())
    assert names == ["bigbuckbunny.info.json", "bigbuckbunny.mp4", "bigbuckbunny.mp4.sha256"]
    assert sha(out / "bunny" / "bigbuckbunny.mp4") == sha(bbb)
    assert (out / "bunny" / "bigbuckbunny.mp4.sha256").read_text().split()[0] == sha(bbb)


def test_payload_that_is_not_a_video_is_deleted(tmp_path, server):
    m = manifest(tmp_path, [("fake", "", server.url("notvideo.mp4"))])
    out = tmp_path / "raw"
    r = run_cli("fetch", "--manifest", m, "--out", out, *FAST)
    assert r.returncode == 2 and "did not deliver a video" in r.stderr and "the file was deleted" in r.stderr
    assert not [p for p in (out / "fake").iterdir() if p.suffix in (".mp4", ".sha256")]
    assert (out / "archive.jsonl").read_text() == ""


def test_unreachable_url_and_missing_file(tmp_path, server):
    m = manifest(tmp_path, [("gone", "", "http://127.0.0.1:9/none.mp4"), ("missing", "", server.url("x.mp4"))])
    r = run_cli("fetch", "--manifest", m, "--out", tmp_path / "raw", *FAST, "--retries", "1")
    errors = [x for x in r.stderr.splitlines() if x.startswith("error:")]
    assert r.returncode == 2 and len(errors) == 2 and "Traceback" not in r.stderr
    assert "http://127.0.0.1:9/none.mp4" in errors[0] and "after 2 attempts" in errors[0]
    assert "404" in errors[1]


@pytest.mark.parametrize("row, says", [
    ("../evil,x,http://h/a.mp4", "name '../evil'"),
    ("ok,../../x,http://h/a.mp4", "id '../../x'"),
    ("ok,/abs,http://h/a.mp4", "id '/abs'"),
    ("ok,x,file:///etc/passwd", "not http(s)"),
    ("ok,x,ftp://h/a.mp4", "not http(s)"),
    ("ok,x,http://h/a.mp4,c,l,n,extra", "wrong number of fields"),
])
def test_bad_manifest_rows_are_refused_with_their_line(tmp_path, row, says):
    m = tmp_path / "bad.csv"
    m.write_text(f"name,id,url,city,license,notes\nfine,f,http://h/f.mp4,,,\n{row}\n")
    r = run_cli("fetch", "--manifest", m, "--out", tmp_path / "raw")
    assert r.returncode == 2 and says in r.stderr and "line 3" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "raw").exists() and not (tmp_path / "evil").exists()


def test_unknown_only_name_and_dry_run(tmp_path):
    r = run_cli("fetch", "--only", "wt_atlantis", "--out", tmp_path / "raw")
    assert r.returncode == 2 and "--only wt_atlantis" in r.stderr and "wt_venice" in r.stderr
    r = run_cli("fetch", "--only", "wt_venice,wt_zurich", "--out", tmp_path / "raw", "--dry-run")
    assert r.returncode == 0 and r.stdout.count("would download") == 2 and "wt_amsterdam" not in r.stdout
    assert not (tmp_path / "raw").exists()


def test_licence_policy():
    wt = Entry("wt_venice", "fGX0Te6pFvk", "https://www.youtube.com/watch?v=fGX0Te6pFvk", license="CC-BY-4.0")
    # what YouTube reports through yt-dlp's info["license"]
    assert license_verdict("Creative Commons Attribution license (reuse allowed)", wt, True, False)[0]
    assert license_verdict("CC BY 4.0", wt, False, False)[0]
    for other in ("Creative Commons Attribution-NonCommercial 4.0", "CC BY-ND", "Standard YouTube License"):
        ok, msg = license_verdict(other, wt, True, False)
        assert not ok and "--allow-license" in msg and other in msg
        assert license_verdict(other, wt, True, True)[0]
    ok, msg = license_verdict(None, wt, builtin=True, allow=False)
    assert ok and msg.startswith("warning:")  # YouTube stopped showing it for some videos
    ok, msg = license_verdict(None, wt, builtin=False, allow=False)
    assert not ok and "reports no licence" in msg


@pytest.mark.parametrize("how", ["tmpfs", "file size limit"])
def test_disk_full_gives_one_line(tmp_path, server, how):
    """A 256 kB tmpfs (where mounting is allowed) or a 256 kB file size limit: writes fail mid-download."""
    m = manifest(tmp_path, [("b", "", server.url("bikes.mp4"))])
    small = tmp_path / "small"
    small.mkdir()
    mounted = how == "tmpfs" and subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(small)],
                                                capture_output=True).returncode == 0
    try:
        def limit_file_size():  # without mount rights: a 256 kB file size limit fails writes the same way
            if not mounted:
                signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
                resource.setrlimit(resource.RLIMIT_FSIZE, (256_000, 256_000))

        r = run_cli("fetch", "--manifest", m, "--out", small / "raw", *FAST, preexec_fn=limit_file_size)
        assert r.returncode == 2, r.stderr
        assert "disk full" in r.stderr and "Traceback" not in r.stderr
        assert len([x for x in r.stderr.splitlines() if x.startswith("error:")]) == 1
        assert not (small / "raw" / "b" / "bikes.mp4").exists()
    finally:
        if mounted:
            subprocess.run(["umount", str(small)], check=True)


def test_catalog_errors_are_input_errors(tmp_path):
    with pytest.raises(InputError, match="catalog not found"):
        read_catalog(tmp_path / "none.csv")
    (tmp_path / "dup.csv").write_text("name,id,url\na,x,http://h/1\na,y,http://h/2\n")
    with pytest.raises(InputError, match="line 3: name 'a' appears twice"):
        read_catalog(tmp_path / "dup.csv")


def test_youtube_js_runtime_comes_with_pip_install_e():
    """YouTube needs yt-dlp-ejs and deno: ordinary dependencies, so `pip install -e .` is enough."""
    deps = re.search(r"dependencies = \[(.+?)\n\]", (ROOT / "pyproject.toml").read_text(), re.S).group(1)
    assert '"yt-dlp[default,deno]' in deps
    assert js_runtime_problem() is None
    from yt_dlp.utils._jsruntime import DenoJsRuntime  # what yt-dlp itself finds

    info = DenoJsRuntime().info
    assert info is not None and info.supported


def test_fetch_without_the_js_runtime_prints_the_fix(tmp_path):
    """Where yt-dlp-ejs or deno is missing, a YouTube fetch stops before any download with the one command."""
    assert "deno JavaScript runtime" in js_runtime_problem(scripts=str(tmp_path), path=str(tmp_path))
    code = ("import sys; sys.modules['yt_dlp_ejs'] = None; sys.argv[0] = 'dora-data'; "
            "from pipeline.cli import main; main()")
    cwd = fresh_dir()
    r = subprocess.run([sys.executable, "-c", code, "fetch", "--only", "wt_venice", "--quiet"], cwd=cwd,
                       capture_output=True, text=True, env=cli_env(), timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines() == [f"error: wt_venice: YouTube needs yt-dlp's JavaScript runtime, but the "
                                             f"yt-dlp-ejs package is not installed; install it with: {FIX_RUNTIME}"]
    assert not (cwd / "data" / "raw" / "wt_venice").exists()
