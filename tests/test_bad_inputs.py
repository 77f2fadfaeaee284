"""Every kind of bad input: one clear line, exit status 2, no traceback, nothing that looks complete."""

from __future__ import annotations

import json
from pathlib import Path

import av
import numpy as np
import pytest

from tests.conftest import run_cli

OPTS = ["--workers", "1", "--quiet", "--clip-frames", "4", "--clip-stride-s", "0.5"]


def _remux(src: Path, dst: Path, **options) -> None:
    with av.open(str(src)) as inp, av.open(str(dst), "w", options=options) as out:
        s = out.add_stream_from_template(inp.streams.video[0])
        for p in inp.demux(inp.streams.video[0]):
            if p.dts is not None:
                p.stream = s
                out.mux(p)


def _truncated_moov_last(tmp: Path, bikes: Path) -> Path:
    p = tmp / "cut_short.mp4"
    data = bikes.read_bytes()  # index (moov) at the end: half a file has no index
    p.write_bytes(data[: len(data) // 2])
    return p


def _truncated_faststart(tmp: Path, bikes: Path) -> Path:
    full = tmp / "fast.mp4"
    _remux(bikes, full, movflags="faststart")
    p = tmp / "cut_short_fast.mp4"
    data = full.read_bytes()  # index first: half a file opens, its frames stop half-way
    p.write_bytes(data[: len(data) // 2])
    full.unlink()
    return p


def _unknown_codec(tmp: Path, bikes: Path) -> Path:
    mkv = tmp / "x.mkv"
    _remux(bikes, mkv)
    p = tmp / "unknown_codec.mkv"
    p.write_bytes(mkv.read_bytes().replace(b"V_MPEG4/ISO/AVC", b"V_QQQQQ/ISO/AVC"))
    mkv.unlink()
    return p


def _audio_only(tmp: Path, bikes: Path) -> Path:
    p = tmp / "audio_only.m4a"
    with av.open(str(p), "w") as out:
        a = out.add_stream("aac", rate=44100)
        a.layout = "mono"
        for i in range(30):
            f = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            f.sample_rate, f.pts = 44100, i * 1024
            for pkt in a.encode(f):
                out.mux(pkt)
        for pkt in a.encode():
            out.mux(pkt)
    return p


def _text(tmp: Path, bikes: Path) -> Path:
    p = tmp / "notes.mp4"
    p.write_text("this is a text file with a video's name\n")
    return p


def _empty(tmp: Path, bikes: Path) -> Path:
    p = tmp / "empty.mp4"
    p.write_bytes(b"")
    return p


def _missing(tmp: Path, bikes: Path) -> Path:
    return tmp / "does_not_exist.mp4"


def _holed(tmp: Path, bikes: Path) -> Path:
    """Opens, and its head and tail decode, but a third of the data in the middle is zeros."""
    full = tmp / "fast_full.mp4"
    _remux(bikes, full, movflags="faststart")
    data = bytearray(full.read_bytes())
    full.unlink()
    n = len(data)
    data[n // 3: n // 3 + n // 4] = bytes(n // 4)
    p = tmp / "holed.mp4"
    p.write_bytes(bytes(data))
    return p


def _empty_folder(tmp: Path, bikes: Path) -> Path:
    p = tmp / "nothing_here"
    p.mkdir()
    return p


CASES = {
    "missing": (_missing, "no such file"),
    "zero bytes": (_empty, "empty"),
    "truncated (index at end)": (_truncated_moov_last, "corrupt, truncated or not a video"),
    "truncated (index first)": (_truncated_faststart, "truncated"),
    "text named .mp4": (_text, "not a readable video"),
    "unsupported codec": (_unknown_codec, "not supported"),
    "no video stream": (_audio_only, "no video stream"),
    "folder without videos": (_empty_folder, "no video files"),
    "corrupt in the middle": (_holed, "corrupt video data"),
}


def _assert_one_clean_line(r, must_name: str, says: str) -> None:
    assert r.returncode == 2, (r.returncode, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("error: ") and must_name in lines[0] and says in lines[0], lines[0]
    assert "Traceback" not in r.stderr + r.stdout


def _assert_nothing_complete(out: Path) -> None:
    assert not (out / "dataset.json").exists()
    assert not list(out.glob("shards/*.tar"))


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_gives_one_clear_line(tmp_path, bikes, case):
    make, says = CASES[case]
    bad = make(tmp_path, bikes)
    out = tmp_path / "out"
    r = run_cli("shard", bad, "--out", out, *OPTS)
    _assert_one_clean_line(r, bad.name, says)
    _assert_nothing_complete(out)


@pytest.mark.parametrize("where", ["under a file", "is a file"])
def test_unwritable_output(tmp_path, bikes, where):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    out = blocker / "sub" if where == "under a file" else blocker
    r = run_cli("shard", bikes, "--out", out, *OPTS)
    _assert_one_clean_line(r, str(out), "cannot write the output folder")


def test_bad_options_and_missing_folders(tmp_path, bikes):
    r = run_cli("shard", bikes, "--out", tmp_path / "o", "--part", "3/2")
    _assert_one_clean_line(r, "--part", "0 <= i < n")
    r = run_cli("verify", tmp_path / "nowhere")
    _assert_one_clean_line(r, "nowhere", "not a finished shard folder")
    r = run_cli("index", tmp_path / "nowhere")
    _assert_one_clean_line(r, "nowhere", "run `dora-data shard")
    r = run_cli("shard", "--out", tmp_path / "o", "data/raw_missing_for_test")
    _assert_one_clean_line(r, "data/raw_missing_for_test", "run `dora-data fetch` first")


def test_keep_going_processes_the_good_ones(tmp_path, bikes, carphone):
    bad = [_text(tmp_path, bikes), _truncated_faststart(tmp_path, bikes), _unknown_codec(tmp_path, bikes),
           _holed(tmp_path, bikes)]
    out = tmp_path / "out"
    opts = [o if o != "1" else "2" for o in OPTS]  # two worker processes: failures arrive from the pool
    r = run_cli("shard", bikes, *bad, carphone, "--out", out, *opts, "--keep-going", "--segment-s", "2")
    assert r.returncode == 2, r.stderr
    errors = [x for x in r.stderr.splitlines() if x.startswith("error: ")]
    assert len(errors) == 4 and all(any(b.name in e for e in errors) for b in bad)
    assert "Traceback" not in r.stderr
    meta = json.loads((out / "dataset.json").read_text())
    assert sorted(v["name"] for v in meta["videos"]) == ["bikes", "carphone_pristine"]
    assert not (out / ".work").exists()  # the truncated video's finished units did not stay behind
    assert json.loads(run_cli("verify", out, "--json").stdout)["ok"]


def test_without_keep_going_first_bad_input_stops_before_work(tmp_path, bikes):
    out = tmp_path / "out"
    r = run_cli("shard", bikes, _text(tmp_path, bikes), "--out", out, *OPTS)
    _assert_one_clean_line(r, "notes.mp4", "not a readable video")
    _assert_nothing_complete(out)
