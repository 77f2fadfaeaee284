"""The faster face pass (issue 11, point 4): detection threads and `--face-every 2`, privacy measured.

Real CenterFace on real faces (carphone: a face on every frame; bikes: cyclists in a street). The
reference is fp32 CenterFace searching every stored frame at the same threshold (0.2).
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from bench.face_int8_bench import hidden_boxes, hidden_recall
from pipeline.demo import sample_video
from pipeline.faces import FaceDetector, FaceSettings, boxes_to_hide, midway
from pipeline.manifest import Dataset
from tests.conftest import run_cli
from tests.videos import decode_all, encode


@pytest.fixture(scope="module")
def fp32() -> FaceDetector:
    return FaceDetector(FaceSettings(provider="cpu"))


def _bgr(rgb_or_jpg) -> np.ndarray:
    if isinstance(rgb_or_jpg, bytes):
        rgb_or_jpg = np.asarray(Image.open(io.BytesIO(rgb_or_jpg)).convert("RGB"))
    return np.ascontiguousarray(rgb_or_jpg[:, :, ::-1])


def test_midway_pairs_moving_faces_and_grows_lone_ones():
    a = np.array([[100, 100, 200, 220, 0.9], [600, 50, 640, 100, 0.3]], np.float32)
    b = np.array([[350, 110, 450, 230, 0.7]], np.float32)  # the first face moved 2.5 box sizes right
    mid = midway(a, b)
    assert len(mid) == 2
    assert np.allclose(mid[0], [225, 105, 325, 225, 0.7])  # halfway, the lower score
    assert np.allclose(mid[1], [590, 37.5, 650, 112.5, 0.3])  # no partner: grown 1.5x about its centre
    assert len(midway(a, np.zeros((0, 5), np.float32))) == 2
    far = b + np.array([2000, 0, 2000, 0, 0], np.float32)  # too far to be the same face: both grown
    assert len(midway(a[:1], far)) == 2
    # a searched frame hides its own and its neighbours' boxes; an unsearched one also the halfway ones
    assert len(boxes_to_hide(a, b, None)) == 3 and len(boxes_to_hide(a, None, b)) == 3 + 2


@pytest.mark.parametrize("name, n_min", [("carphone_pristine.mp4", 20), ("bikes.mp4", 15)])
def test_every_other_frame_hides_what_fp32_finds(fp32, name, n_min):
    """Recall of `--face-every 2` against fp32 on every frame, both at threshold 0.2, on 10 fps of real
    footage: a face counts as hidden when >= 90 % of its box lies under the blur. At least 90 % of the
    faces fp32 scores >= 0.5 or >= 0.2 are hidden (measured here: carphone 20/20; bikes 18/19 and 39/41:
    a face seen on one stored frame only is lost; at 720p, BENCHMARKS.md)."""
    _, frames = decode_all(sample_video(name))
    imgs = [_bgr(f) for f in frames[::3]]
    dets = [fp32.detect(i) for i in imgs]
    for min_score in (0.5, 0.2):
        ref = [d[d[:, 4] >= min_score] for d in dets]
        hit, n = hidden_recall(ref, hidden_boxes(dets, 2), imgs[0].shape[:2])
        assert n >= n_min and hit >= (0.9 if min_score == 0.5 else 0.8) * n, (name, min_score, hit, n)
        print(name, min_score, hit, n)
    # the measure can fail: searching only every 4th frame loses faces on this footage
    ref = [d[d[:, 4] >= 0.2] for d in dets]
    sparse = [d if k % 4 == 0 else None for k, d in enumerate(dets)]
    hidden = [boxes_to_hide(sparse[k - 1] if k else None, sparse[k], sparse[k + 1] if k + 1 < len(dets) else None)
              for k in range(len(dets))]
    hit, n = hidden_recall(ref, hidden, imgs[0].shape[:2])
    assert hit < n


def test_every_other_frame_shards_hide_faces_from_fp32(tmp_path, fp32, carphone, bikes):
    """After `shard --blur-faces --face-every 2`, fp32 CenterFace finds no face >= 0.5 on >= 99 % of
    stored frames; before blurring it found one on every carphone frame and on many bikes frames."""
    out = tmp_path / "o"
    r = run_cli("shard", carphone, bikes, "--out", out, "--blur-faces", "--face-every", "2", "--workers", "1",
                "--quiet", "--clip-frames", "2", "--clip-stride-s", "0.5")
    assert r.returncode == 0, r.stderr
    ds = Dataset(out)
    assert ds.meta["settings"]["faces"]["every"] == 2
    strict = FaceDetector(FaceSettings(threshold=0.5, provider="cpu"))
    for src, video, min_before in ((carphone, "carphone_pristine", 1.0), (bikes, "bikes", 0.3)):
        tab = ds.table(video)
        times, frames = decode_all(src)
        n = len(tab)
        before = after = 0
        for row in range(n):
            k = int(np.argmin(np.abs(np.array(times) - tab.t[row])))
            before += len(strict.detect(_bgr(frames[k]))) > 0
            after += len(strict.detect(_bgr(ds.read_frame(video, row)))) > 0
        assert before >= min_before * n and after <= 0.01 * n, (video, before, after, n)
        searched = tab.faces >= 0
        assert 0.4 * n <= searched.sum() <= 0.6 * n + 1  # every other slot; -1 marks an unsearched one
        assert np.all(tab.faces[~searched] == -1)


def test_every_other_frame_does_not_depend_on_units_or_threads(tmp_path):
    """One unit inline (a detection thread per core) or many units in 2 worker processes (one thread
    each) give the same bytes, also where a face frame is held across unit borders and slot parity."""
    _, frames = decode_all(sample_video("carphone_pristine.mp4"))
    src = tmp_path / "faces.mp4"
    pts = [33 * i for i in range(20)] + [2950 + 33 * i for i in range(25)]  # frame 19 held 0.63 .. 2.95 s
    encode(src, frames[:45], pts, options={"crf": "14", "preset": "fast"})
    outs = []
    for seg, workers in (("100", "1"), ("1", "2"), ("1.3", "1")):
        out = tmp_path / f"out{seg}"
        r = run_cli("shard", src, "--out", out, "--segment-s", seg, "--workers", workers, "--quiet", "--blur-faces",
                    "--face-every", "2", "--clip-frames", "2", "--clip-stride-s", "0.5")
        assert r.returncode == 0, r.stderr
        outs.append((out / "shards/shard-000000.tar").read_bytes())
    assert outs[0] == outs[1] == outs[2]
    tab = Dataset(tmp_path / "out100").table("faces")
    assert np.all(tab.blurred >= 1)  # a face on every frame: every stored frame has something hidden
