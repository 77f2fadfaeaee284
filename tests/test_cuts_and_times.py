"""Cut times and frame times: exact, in one clock, independent of how the video is split into units."""

from __future__ import annotations

import io

import av
import numpy as np
import pytest
from PIL import Image

from pipeline.dataset.reader import Dataset
from pipeline.shard.cuts import CutSettings, CutTracker, shots_from_cuts
from tests.videos import BIKES_CUTS_S, BIKES_FPS, SIZE, concat_frames, decode_all


def _detect(path, detector: str) -> list[float]:
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        ct = CutTracker(CutSettings(detector=detector), s.width, s.height, float(s.average_rate), s.time_base)
        for f in c.decode(s):
            ct.feed(f)
        return ct.finish()


@pytest.mark.parametrize("detector", ["adaptive", "content"])
def test_bikes_cuts_match_inspected_truth(bikes, detector):
    cuts = _detect(bikes, detector)
    assert len(cuts) == len(BIKES_CUTS_S)
    assert np.allclose(cuts, BIKES_CUTS_S, atol=1 / BIKES_FPS + 1e-9)


def test_shard_shots_match_truth_for_every_video(main_ds, concat, concat_vfr):
    ds = Dataset(main_ds)
    videos = {v["name"]: v for v in ds.videos}
    truth = {"bikes": BIKES_CUTS_S, "concat": concat[1], "concat_vfr": concat_vfr[1], "carphone_pristine": []}
    for name, cuts in truth.items():
        shots = np.array(videos[name]["shots"])
        found = shots[1:, 0]
        assert len(found) == len(cuts), (name, found, cuts)
        # within one source frame (the VFR video's longest frame is 60 ms)
        assert np.all(np.abs(found - cuts) <= 0.061), (name, found, cuts)
        assert shots[0, 0] == 0.0 and np.all(shots[:-1, 1] == shots[1:, 0])


@pytest.mark.parametrize("which", ["concat", "concat_vfr"])
def test_stored_frames_agree_with_cuts(main_ds, which, request):
    """Each stored frame shows the piece its timestamp says, and lies in the shot its time says.

    The pieces are known, so every stored JPEG is compared with the source frames of the piece the
    cut times put it in: a clock mismatch between cuts and stored frames (B-frame reordering, VFR)
    would put frames next to a cut into the wrong piece.
    """
    path, cuts = request.getfixturevalue(which)
    ds = Dataset(main_ds)
    tab = ds.table(which)
    times, _ = decode_all(path)
    frames, starts = concat_frames()
    piece_of_source = np.searchsorted(starts, np.arange(len(frames)), side="right")
    src_times = np.array(times)
    for row in range(len(tab)):
        t = tab.t[row]
        k = int(np.searchsorted(src_times, t + 1e-6, side="right")) - 1  # the frame on screen at t
        assert abs(t * 10 - round(t * 10)) < 1e-6, "stored time is not a slot time"
        assert tab.index[row] == k, "frame index is not the decode-order index of the frame on screen"
        piece = piece_of_source[k]
        assert tab.shot[row] == piece == int(np.searchsorted(cuts, t, side="right"))
        stored = np.asarray(Image.open(io.BytesIO(ds.read_frame(which, row))).convert("RGB").resize(SIZE), float)
        errs = [np.abs(stored - frames[j]).mean() for j in range(max(0, k - 2), min(len(frames), k + 3))]
        same_piece = [j for j in range(max(0, k - 2), min(len(frames), k + 3)) if piece_of_source[j] == piece]
        assert min(errs) == min(np.abs(stored - frames[j]).mean() for j in same_piece)


def test_units_do_not_change_results(tmp_path, bikes):
    """One unit or many: same cuts, same frames, same bytes."""
    from tests.conftest import run_cli

    outs = []
    for seg in ("100", "2"):
        out = tmp_path / seg
        r = run_cli("shard", bikes, "--out", out, "--segment-s", seg, "--workers", "1", "--quiet")
        assert r.returncode == 0, r.stderr
        outs.append(out)
    a, b = Dataset(outs[0]), Dataset(outs[1])
    assert a.videos[0]["shots"] == b.videos[0]["shots"]
    ta, tb = a.table("bikes"), b.table("bikes")
    assert np.array_equal(ta.t, tb.t) and np.array_equal(ta.index, tb.index)
    assert all(a.read_frame("bikes", r) == b.read_frame("bikes", r) for r in range(len(ta)))
    shard = "shards/shard-000000.tar"
    assert (outs[0] / shard).read_bytes() == (outs[1] / shard).read_bytes()


def test_stored_rate_and_spacing(main_ds):
    ds = Dataset(main_ds)
    tab = ds.table("bikes")
    assert len(tab) == 100  # 10 s at 10 fps from 25 fps
    assert np.allclose(tab.t, np.arange(100) / 10)  # one frame per 0.1 s slot, at the slot's time
    assert np.array_equal(tab.index, np.floor(np.arange(100) / 10 * BIKES_FPS + 1e-6))  # the frame on screen
    assert ds.videos[[v["name"] for v in ds.videos].index("bikes")]["n_held_slots"] == 0


def test_shots_from_cuts():
    assert shots_from_cuts([2.0, 1.0, 9.0], 0.0, 5.0) == [[0.0, 1.0], [1.0, 2.0], [2.0, 5.0]]
    assert shots_from_cuts([], 0.5, 5.0) == [[0.5, 5.0]]
