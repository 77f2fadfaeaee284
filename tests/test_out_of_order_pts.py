"""Frames decoded in display order whose container timestamps are not (AVI-style packed B-frames).

The file built here (tests/videos.py make_relabelled_mpeg4) is real MPEG-4 Part 2 with two B-frames,
remuxed into Matroska with each packet labelled by its decode-order position, as AVI labels chunks:
the decoder outputs frames in display order carrying labels 0, 2, 3, 1, 5, 6, 4, ... (x 40 ms).
This ffmpeg cannot write packed B-frames (DivX "packed bitstream" plus N-VOP placeholders; it only
has the mpeg4_unpack_bframes filter), and building that bitstream by hand was not attempted, so this
relabelled remux is the stand-in: for the decoder output it gives the same property, timestamps out
of order by a few frames while the pictures are in order.
"""

from __future__ import annotations

import io

import av
import numpy as np
import pytest
from PIL import Image

from pipeline.manifest import Dataset
from tests.conftest import run_cli
from tests.videos import concat_frames, decode_all, make_relabelled_mpeg4


@pytest.fixture(scope="module")
def relabelled(tmp_path_factory):
    path = tmp_path_factory.mktemp("ooo") / "movie.mkv"
    return path, make_relabelled_mpeg4(path)


def test_file_really_has_out_of_order_pts(relabelled):
    path, _ = relabelled
    with av.open(str(path)) as c:
        pts = [int(f.pts) for f in c.decode(video=0)]
    assert len(pts) == 285 and sorted(pts) == [40 * i for i in range(285)]
    assert pts[:7] == [0, 80, 120, 40, 200, 240, 160]  # display order, labels out of order


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
    tab = ds.table("movie")
    frames, starts = concat_frames()
    piece_of_source = np.searchsorted(starts, np.arange(len(frames)), side="right")
    assert np.array_equal(tab.index, np.floor(tab.t * 25 + 1e-6).astype(int))
    _, decoded = decode_all(path)  # display order
    for row in range(len(tab)):
        k = int(tab.index[row])
        assert tab.shot[row] == piece_of_source[k] == int(np.searchsorted(cuts, tab.t[row], side="right"))
        stored = np.asarray(Image.open(io.BytesIO(ds.read_frame("movie", row))).convert("RGB"), float)
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
