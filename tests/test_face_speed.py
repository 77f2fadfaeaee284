"""The face pass on several cores, and the privacy measures behind its settings (issue 11, point 4).

Real CenterFace on real faces (carphone: a face on every frame; bikes: cyclists in a street). The
reference is fp32 CenterFace searching every stored frame at the same threshold (0.2).
"""

from __future__ import annotations

import io
import threading

import numpy as np
import pytest
from PIL import Image

from bench.face_int8_bench import hidden_boxes, hidden_recall, midway
from pipeline.dataset import Dataset
from pipeline.shard.faces import FaceDetector, FaceSettings
from pipeline.shard.segment import _FrameSink, _Stored
from pipeline.shard.settings import ShardSettings
from pipeline.video.samples import sample_video
from tests.conftest import run_cli
from tests.videos import decode_all, encode


@pytest.fixture(scope="module")
def fp32() -> FaceDetector:
    return FaceDetector(FaceSettings(provider="cpu"))


def _bgr(rgb_or_jpg) -> np.ndarray:
    if isinstance(rgb_or_jpg, bytes):
        rgb_or_jpg = np.asarray(Image.open(io.BytesIO(rgb_or_jpg)).convert("RGB"))
    return np.ascontiguousarray(rgb_or_jpg[:, :, ::-1])


class _Recording(FaceDetector):
    """The real detector; notes which threads ran it."""

    def __init__(self, settings: FaceSettings):
        super().__init__(settings)
        self.threads: set[int] = set()

    def detect(self, bgr: np.ndarray) -> np.ndarray:
        self.threads.add(threading.get_ident())
        return super().detect(bgr)


@pytest.mark.parametrize("name", ["carphone_pristine.mp4", "bikes.mp4"])
def test_detection_runs_on_several_threads_with_the_same_result(name):
    """A unit alone on the machine searches frames on a thread per core; what it writes is what one
    detection thread writes (same JPEG bytes, faces and blurred counts, same order)."""
    settings = ShardSettings(blur_faces=True, faces=FaceSettings(provider="cpu"))
    _, frames = decode_all(sample_video(name))
    imgs = [_bgr(f) for f in frames[:96:4]]
    written = {}
    for threads in (1, 3):
        det, rows = _Recording(settings.faces), []
        sink = _FrameSink(det, settings, lambda *row: rows.append(row), detect_threads=threads)  # noqa: B023
        for i, img in enumerate(imgs):
            sink.push(_Stored(i / 10, i, img.copy()), i)
        sink.after(None)
        sink.close()
        assert len(det.threads) == threads
        written[threads] = rows
    assert [r[0] for r in written[3]] == [i / 10 for i in range(len(imgs))]
    assert written[3] == written[1]
    assert sum(r[3] for r in written[1]) >= len(imgs) // 2  # faces were found (and hidden)


def test_units_and_threads_do_not_change_the_bytes(tmp_path):
    """One unit, or units of 1 s run inline (a detection thread per core) or in 2 worker processes (one
    thread each), give the same shard bytes. A face frame is held from 0.63 to 2.95 s: at the unit
    border at 3 s, two different frames lie before the unit (the held one and the one shown at 3.0 s),
    and each must be searched for its own faces."""
    _, frames = decode_all(sample_video("carphone_pristine.mp4"))
    src = tmp_path / "faces.mp4"
    pts = [33 * i for i in range(20)] + [2950 + 33 * i for i in range(25)]  # frame 19 held 0.63 .. 2.95 s
    encode(src, frames[:45], pts, options={"crf": "14", "preset": "fast"})
    outs = []
    for seg, workers in (("100", "1"), ("1", "1"), ("1", "2")):
        out = tmp_path / f"out{seg}-{workers}"
        r = run_cli("shard", src, "--out", out, "--segment-s", seg, "--workers", workers, "--quiet", "--blur-faces",
                    "--clip-frames", "2", "--clip-stride-s", "0.5")
        assert r.returncode == 0, r.stderr
        outs.append((out / "shards/shard-000000.tar").read_bytes())
    assert outs[0] == outs[1] == outs[2]
    assert np.all(Dataset(tmp_path / "out100-1").table("faces").blurred >= 1)


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_blurred_street_hides_faces_from_fp32(tmp_path, bikes, precision):
    """Bikes (a street, cyclists): fp32 CenterFace finds a face >= 0.5 on many stored frames before
    blurring and on <= 1 % after `shard --blur-faces` with either precision (measured: 1 of 100)."""
    cache = {"DORA_CACHE": str(tmp_path / "cache")}
    r = run_cli("shard", bikes, "--out", tmp_path / "o", "--blur-faces", "--face-precision", precision, "--workers",
                "1", "--quiet", "--clip-frames", "2", "--clip-stride-s", "0.5", env=cache)
    assert r.returncode == 0, r.stderr
    ds = Dataset(tmp_path / "o")
    strict = FaceDetector(FaceSettings(threshold=0.5, provider="cpu"))
    tab = ds.table("bikes")
    times, frames = decode_all(bikes)
    before = after = 0
    for row in range(len(tab)):
        k = int(np.argmin(np.abs(np.array(times) - tab.t[row])))
        before += len(strict.detect(_bgr(frames[k]))) > 0
        after += len(strict.detect(_bgr(ds.read_frame("bikes", row)))) > 0
    assert before >= 0.2 * len(tab) and after <= 0.01 * len(tab), (before, after, len(tab))


def test_midway_pairs_moving_faces_and_grows_lone_ones():
    a = np.array([[100, 100, 200, 220, 0.9], [600, 50, 640, 100, 0.3]], np.float32)
    b = np.array([[350, 110, 450, 230, 0.7]], np.float32)  # the first face moved 2.5 box sizes right
    mid = midway(a, b, grow=1.0)
    assert np.allclose(mid, [[225, 105, 325, 225, 0.7], [600, 50, 640, 100, 0.3]])  # halfway; alone: itself
    assert np.allclose(midway(a[1:], b[:0])[0, :4], [590, 37.5, 650, 112.5])  # grown 1.5x about its centre
    far = b + np.array([2000, 0, 2000, 0, 0], np.float32)  # too far to be the same face
    assert len(midway(a[:1], far)) == 2


def test_searching_every_other_frame_loses_street_faces(fp32):
    """Why every stored frame is searched: hiding the unsearched frames with their neighbours' and
    halfway boxes misses faces fp32 finds on bikes (>= 0.5: 18 of 19 hidden; a face on one stored
    frame only is lost). The measure: >= 90 % of a face's box under the blur ellipses."""
    _, frames = decode_all(sample_video("bikes.mp4"))
    imgs = [_bgr(f) for f in frames[::3]]  # about 10 fps of the 25 fps source
    dets = [fp32.detect(i) for i in imgs]
    ref = [d[d[:, 4] >= 0.5] for d in dets]
    full = hidden_recall(ref, hidden_boxes(dets, 1), imgs[0].shape[:2])
    half = hidden_recall(ref, hidden_boxes(dets, 2), imgs[0].shape[:2])
    assert full[1] >= 15 and full[0] == full[1]
    assert half[0] < half[1]
