"""Held frames and variable frame rate: every 1/fps slot stores the frame on screen at its time."""

from __future__ import annotations

import io
import json
import subprocess

import av
import imageio_ffmpeg
import numpy as np
import pytest
from PIL import Image

from pipeline.dataset.reader import Dataset
from pipeline.video.samples import sample_video
from tests.conftest import run_cli
from tests.videos import SIZE, decode_all, encode

FPS = 10


def _held_pts_ms() -> list[int]:
    """50 frames: 25 fps runs broken by two holds of 3.44 s and 2.94 s (longer than a unit's margin)."""
    pts = [40 * i for i in range(15)]  # 0 .. 560 ms
    pts += [4000 + 40 * i for i in range(15)]  # frame 14 is held from 0.56 s to 4.0 s
    pts += [7500 + 40 * i for i in range(20)]  # frame 29 is held from 4.56 s to 7.5 s
    return pts


@pytest.fixture(scope="module")
def held(tmp_path_factory):
    """A VFR H.264 mp4 (1 ms clock) of one shot of bikes.mp4 whose frames are held for seconds."""
    _, frames = decode_all(sample_video("bikes.mp4"), SIZE)
    path = tmp_path_factory.mktemp("held") / "held.mp4"
    times = encode(path, frames[137:187], _held_pts_ms(), options={"crf": "18", "preset": "fast"})
    return path, np.array(times)


def _shard(tmp_path, src, seg: str):
    out = tmp_path / f"out{seg}"
    r = run_cli("shard", src, "--out", out, "--fps", str(FPS), "--segment-s", seg, "--workers", "1", "--quiet")
    assert r.returncode == 0, r.stderr
    return out


def test_grid_is_complete_and_shows_the_frame_on_screen(tmp_path, held):
    """One row per slot up to the end; each row is the latest source frame with t <= slot time, its pixels
    are that frame's, held rows are counted, and one unit or many give identical bytes."""
    src, times = held
    outs = [_shard(tmp_path, src, seg) for seg in ("100", "2")]
    ds = Dataset(outs[0])
    tab = ds.table("held")
    end = times[-1] + 0.04
    n_slots = int(np.ceil(end * FPS - 1e-6))
    assert len(tab) == n_slots  # old code: 20 rows (one per slot holding a new frame)
    assert np.allclose(tab.t, np.arange(n_slots) / FPS)
    on_screen = np.searchsorted(times, tab.t + 1e-6, side="right") - 1
    assert np.array_equal(tab.index, on_screen)
    video = ds.videos[0]
    assert video["n_held_slots"] == int((np.diff(on_screen) == 0).sum()) >= 60
    _, src_frames = decode_all(src)
    for row in range(len(tab)):
        stored = np.asarray(Image.open(io.BytesIO(ds.read_frame("held", row))).convert("RGB"), float)
        k = int(tab.index[row])
        errs = {j: np.abs(stored - src_frames[j]).mean() for j in range(max(0, k - 2), min(len(times), k + 3))}
        assert min(errs, key=errs.get) == k, (row, errs)
    other = Dataset(outs[1]).table("held")
    assert np.array_equal(tab.t, other.t) and np.array_equal(tab.index, other.index)
    shard = "shards/shard-000000.tar"
    assert (outs[0] / shard).read_bytes() == (outs[1] / shard).read_bytes()
    r = run_cli("verify", outs[0])
    assert r.returncode == 0 and f"{video['n_held_slots']} of them held frames" in r.stdout, r.stdout
    # 8 frames 1 s apart fit in the 8.3 s shot
    r = run_cli("clips", outs[0], "--n", "3", "--json")
    assert r.returncode == 0, r.stderr
    assert len([json.loads(x) for x in r.stdout.splitlines() if x.startswith("{")]) == 3


def test_clips_message_names_the_shot_lengths(tmp_path, held):
    src, _ = held
    out = _shard(tmp_path, src, "100")
    r = run_cli("clips", out, "--clip-frames", "12")
    assert r.returncode == 2
    line = r.stderr.strip().splitlines()[-1]
    assert "11.0 s" in line and "8.3 s" in line, line


def test_faces_on_held_frames_do_not_depend_on_units(tmp_path):
    """A face frame held across unit borders: every slot it fills is blurred like its first slot, and one
    unit or many give the same bytes (the +-1 carry-over sees the same neighbours)."""
    _, frames = decode_all(sample_video("carphone_pristine.mp4"))
    src = tmp_path / "faces.mp4"
    pts = [33 * i for i in range(20)] + [3000 + 33 * i for i in range(20)]  # frame 19 held 0.63 s .. 3.0 s
    encode(src, frames[:40], pts, options={"crf": "14", "preset": "fast"})
    outs = []
    for seg in ("100", "1"):
        out = tmp_path / f"out{seg}"
        r = run_cli("shard", src, "--out", out, "--fps", str(FPS), "--segment-s", seg, "--workers", "1", "--quiet",
                    "--blur-faces", "--clip-frames", "2", "--clip-stride-s", "0.5")
        assert r.returncode == 0, r.stderr
        outs.append(out)
    tab = Dataset(outs[0]).table("faces")
    held = np.nonzero(tab.index == 19)[0]
    assert len(held) >= 23  # slots 0.7 .. 2.9 s
    assert np.all(tab.faces[held] == tab.faces[held[0]]) and tab.faces[held[0]] >= 1
    assert np.all(tab.blurred[held] >= 1)
    assert (outs[0] / "shards/shard-000000.tar").read_bytes() == (outs[1] / "shards/shard-000000.tar").read_bytes()


def test_cinepak_avi_with_repeat_entries(tmp_path):
    """The issue's case: an AVI whose index holds empty "repeat the previous frame" entries (ffmpeg's AVI
    muxer writes one per missing 1/25 s tick). The decoder returns only the coded frames; the grid is
    still complete and `clips` finds the 8.3 s shot long enough for 8 frames 1 s apart."""
    _, frames = decode_all(sample_video("bikes.mp4"), (96, 64))
    pts = [40 * i for i in range(4)] + [3000 + 40 * i for i in range(4)] + [7000 + 40 * i for i in range(4)]
    vfr = tmp_path / "vfr.mp4"
    encode(vfr, frames[137:149], pts, options={"crf": "18", "preset": "fast"})
    src = tmp_path / "cinepak.avi"
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-i", str(vfr), "-fps_mode", "passthrough",
                    "-enc_time_base", "1/25", "-c:v", "cinepak", str(src)], check=True)
    with av.open(str(src)) as c:
        declared = c.streams.video[0].frames
        times = np.array([float(f.pts * f.time_base) for f in c.decode(video=0)])
    assert len(times) == 12 and declared == 7000 // 40 + 4  # 176 index entries, 164 of them empty
    out = _shard(tmp_path, src, "2")
    ds = Dataset(out)
    tab, video = ds.table("cinepak"), ds.videos[0]
    n_slots = int(np.ceil((times[-1] + 0.04) * FPS - 1e-6))
    assert len(tab) == n_slots == video["n_frames"]  # old code: 4 rows
    on_screen = np.searchsorted(times, np.arange(n_slots) / FPS + 1e-6, side="right") - 1
    assert np.array_equal(tab.index, on_screen)
    assert video["n_held_slots"] == n_slots - len(set(on_screen.tolist())) == 64
    r = run_cli("clips", out, "--n", "2")
    assert r.returncode == 0, r.stderr
