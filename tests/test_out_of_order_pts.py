"""Frames decoded in display order whose container timestamps are not (packed B-frames).

Two real MPEG-4 Part 2 files of the concatenated video (known cut times), built in tests/videos.py:
- `make_packed_avi`: a DivX-style AVI with packed B-frames, built from PyAV's unpacked mpeg4 packets
  (each I/P-VOP packed with the next B-VOP in one chunk, a not-coded VOP placeholder chunk after it,
  `DivX503b1393p` user data). This ffmpeg cannot write that layout itself. ffmpeg warns about
  'packed B-frames' and decodes the same pictures in display order with labels 1, 3, 2, 5, 4, ...
- `make_relabelled_mpeg4`: two B-frames remuxed into Matroska, each packet labelled with its
  decode-order position: labels 0, 2, 3, 1, 5, 6, 4, ... (a wider permutation).
"""

from __future__ import annotations

import io
import re
import subprocess

import av
import imageio_ffmpeg
import numpy as np
import pytest
from PIL import Image

from pipeline.dataset.reader import Dataset
from pipeline.video.decode import iter_frames
from tests.conftest import run_cli
from tests.videos import concat_frames, decode_all, make_packed_avi, make_relabelled_mpeg4


@pytest.fixture(scope="module", params=["packed", "relabelled"])
def relabelled(tmp_path_factory, request):
    if request.param == "packed":
        path = tmp_path_factory.mktemp("ooo") / "movie.avi"
        return path, make_packed_avi(path)
    path = tmp_path_factory.mktemp("ooo") / "movie.mkv"
    return path, make_relabelled_mpeg4(path)


def _ffmpeg_times(path) -> tuple[list[float], str]:
    """Frame times as ffmpeg itself places them (showinfo after the decoder's timestamp guessing)."""
    r = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-i", str(path), "-vf", "showinfo",
                        "-f", "null", "-"], capture_output=True, text=True, check=True)
    return [float(x) for x in re.findall(r"pts_time:\s*([0-9.]+)", r.stderr)], r.stderr


def test_file_really_has_out_of_order_pts(relabelled):
    path, _ = relabelled
    with av.open(str(path)) as c:
        pts = [int(f.pts) for f in c.decode(video=0)]
    assert len(pts) == 285 and pts != sorted(pts) and len(set(pts)) == 285
    ours = [t for t, _ in iter_frames(str(path), 0.0, None)]
    assert np.all(np.diff(ours) > 0)
    if path.suffix == ".avi":
        assert pts[:6] == [1, 3, 2, 5, 4, 7]
        ff, log = _ffmpeg_times(path)
        assert "packed B-frames" in log
        assert np.allclose(ours, ff)  # placed as ffmpeg places them
    else:
        assert pts[:7] == [0, 80, 120, 40, 200, 240, 160]  # display order, labels out of order
        assert np.allclose(ours, np.arange(285) * 0.04)


def test_shards_with_exact_cuts_and_right_pieces(tmp_path, relabelled):
    """Shards (old code: `timestamps go backwards`); cuts within one frame; each stored frame shows
    the piece its time says; one unit or many give the same bytes."""
    path, cuts = relabelled
    outs = []
    for seg in ("100", "3"):
        out = tmp_path / f"out{seg}"
        r = run_cli("shard", path, "--out", out, "--fps", "10", "--segment-s", seg, "--workers", "1", "--quiet")
        assert r.returncode == 0, r.stderr
        outs.append(out)
    ds = Dataset(outs[0])
    found = np.array(ds.videos[0]["shots"])[1:, 0]
    assert len(found) == len(cuts) and np.all(np.abs(found - cuts) <= 0.04 + 1e-6), (found, cuts)
    tab = ds.table(ds.videos[0]["name"])
    frames, starts = concat_frames()
    piece_of_source = np.searchsorted(starts, np.arange(len(frames)), side="right")
    assert np.array_equal(tab.index, np.floor((tab.t - tab.t[0]) * 25 + 1e-6).astype(int))
    _, decoded = decode_all(path)  # display order
    for row in range(len(tab)):
        k = int(tab.index[row])
        assert tab.shot[row] == piece_of_source[k] == int(np.searchsorted(cuts, tab.t[row], side="right"))
        stored = np.asarray(Image.open(io.BytesIO(ds.read_frame(ds.videos[0]["name"], row))).convert("RGB"), float)
        near = range(max(0, k - 3), min(len(frames), k + 4))
        errs = {j: np.abs(stored - decoded[j]).mean() for j in near}
        best = min(errs, key=errs.get)  # neighbours of a still shot may tie within JPEG noise
        assert errs[k] - errs[best] < 0.05 and piece_of_source[best] == piece_of_source[k], (row, errs)
    assert (outs[0] / "shards/shard-000000.tar").read_bytes() == (outs[1] / "shards/shard-000000.tar").read_bytes()


def test_frames_that_cannot_be_placed_are_refused_in_one_line(tmp_path):
    path = tmp_path / "broken.mkv"
    make_relabelled_mpeg4(path, late=40)  # one label 12 s after the end
    r = run_cli("shard", path, "--out", tmp_path / "out", "--quiet")
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    line = r.stderr.strip().splitlines()[-1]
    assert "broken.mkv" in line and "cannot be placed in time" in line and "re-encode" in line, line
