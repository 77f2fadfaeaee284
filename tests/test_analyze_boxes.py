"""detections.csv holds the boxes a detector really found: the default (offline) detector's people and faces
with their scores, and for a plug-in that names classes only, empty score and box cells (never NaN boxes
with a made-up score of 1)."""

from __future__ import annotations

import csv
import math

from tests.conftest import run_cli


def rows(out) -> list[dict]:
    with open(out / "detections.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_the_default_detector_records_its_real_boxes(tmp_path, bikes):
    out = tmp_path / "analysis"
    r = run_cli("analyze", bikes, "--out", out, "--quiet", "--workers", "1")
    assert r.returncode == 0, r.stderr
    found = rows(out)
    assert {d["class"] for d in found} == {"person", "face"}, found[:5]
    for d in found:
        x0, y0, x1, y1, score = (float(d[k]) for k in ("x0", "y0", "x1", "y1", "score"))
        assert all(math.isfinite(v) for v in (x0, y0, x1, y1, score)), d
        assert -1 <= x0 < x1 <= 641 and -1 <= y0 < y1 <= 273, d  # inside the 640x272 frame the detector saw
        if d["class"] == "face":
            assert 0.5 <= score <= 1.0  # CenterFace confidence above the 0.5 threshold
        else:
            assert score > 0.5  # the HOG SVM margin above the threshold
    assert len({d["score"] for d in found}) > 1


def test_a_plugin_without_boxes_leaves_the_box_cells_empty(tmp_path, carphone):
    out = tmp_path / "plugin"
    r = run_cli("analyze", carphone, "--out", out, "--quiet", "--workers", "1", "--detector",
                "tests.plugin_detector:make")
    assert r.returncode == 0, r.stderr
    found = rows(out)
    assert found and {d["class"] for d in found} <= {"bright thing", "dark thing", "shadow"}
    assert all(d[k] == "" for d in found for k in ("score", "x0", "y0", "x1", "y1")), found[:3]
    assert (out / "detections.png").stat().st_size > 0
