"""Inputs that used to give silently degenerate shard folders: videos without a single clip, a JPEG named
.mp4, --fps above the source's frame rate, --shard-size 0."""

from __future__ import annotations

import av
from PIL import Image

from tests.conftest import run_cli

SMALL = ["--workers", "1", "--quiet", "--short-side", "64", "--segment-s", "120"]


def test_clipless_video_and_fps_above_the_source_are_warned_by_shard_and_verify(tmp_path, bikes, carphone):
    out = tmp_path / "out"
    # clips span 3 s: bikes' shots are at most 2.44 s long, carphone is one 4 s shot; bikes has 25 frames/s,
    # carphone 29.97, against --fps 28
    r = run_cli("shard", bikes, carphone, "--out", out, *SMALL, "--fps", "28", "--clip-frames", "4",
                "--clip-stride-s", "1", timeout=300)
    assert r.returncode == 0, r.stderr
    warnings = [x for x in r.stderr.splitlines() if x.startswith("warning:")]
    assert any(x.startswith(f"warning: {bikes}: the source has 25 frames/s, fewer than --fps 28") for x in warnings)
    assert any(x.startswith("warning: bikes: 0 clips: each of its 6 shot(s) is shorter than one clip")
               for x in warnings), warnings
    assert not any("carphone" in x for x in warnings), warnings
    r = run_cli("verify", out)
    assert r.returncode == 0 and r.stdout.startswith("OK"), r.stdout + r.stderr
    said = [x for x in r.stderr.splitlines() if x.startswith("warning:")]
    assert any(x.startswith("warning: bikes: 0 clips") for x in said)
    assert any(x.startswith("warning: bikes: the source has 25 frames/s, fewer than --fps 28") for x in said)
    assert not any("carphone" in x for x in said), said


def test_a_jpeg_named_mp4_is_refused_in_one_line(tmp_path, bikes):
    with av.open(str(bikes)) as c:
        frame = next(c.decode(video=0)).to_image()
    photo = tmp_path / "holiday.mp4"
    frame.save(photo, format="JPEG")
    assert Image.open(photo).format == "JPEG"
    r = run_cli("shard", photo, "--out", tmp_path / "out", *SMALL)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    assert lines[0] == f"error: {photo}: is a JPEG image, not a video (one still picture, whatever its name says); " \
                       "give a video file"
    assert not (tmp_path / "out" / "dataset.json").exists()


def test_shard_size_zero_is_refused(tmp_path, bikes):
    for size in ("0", "0MB"):
        r = run_cli("shard", bikes, "--out", tmp_path / "out", *SMALL, "--shard-size", size)
        assert r.returncode == 2 and "Invalid value for '--shard-size'" in r.stderr and "Traceback" not in r.stderr
        assert not (tmp_path / "out").exists()
