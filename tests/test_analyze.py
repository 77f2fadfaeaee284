"""`dora-data analyze`: Figure 2 measures on real video, checked against independent computations."""

from __future__ import annotations

import json
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image
from skimage.color import rgb2lab

from pipeline.analyze.run import analysis_frame, lightness
from tests.conftest import run_cli
from tests.videos import BIKES_CUTS_S, decode_all, encode

VIDEO_KEYS = {"name", "label", "kind", "source", "minutes", "shorter_than_minutes", "duration_s", "fps", "shots",
              "cuts_s", "cuts_from", "lightness", "objects", "classes", "unique_classes", "detector"}


@pytest.fixture(scope="module")
def analysed(tmp_path_factory, bikes, carphone, concat) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("analysis")
    r = run_cli("analyze", bikes, carphone, concat[0], "--out", out, "--fps", "2", "--workers", "2", "--quiet")
    assert r.returncode == 0, r.stderr
    return out, json.loads((out / "analysis.json").read_text())


def _video(meta: dict, name: str) -> dict:
    return next(v for v in meta["videos"] if v["name"] == name)


def test_json_schema_is_stable(analysed):
    _, meta = analysed
    assert set(meta) == {"schema", "detector", "vocabulary", "settings", "videos"} and meta["schema"] == 2
    assert meta["detector"].startswith("offline") and meta["vocabulary"] == {"name": "offline", "size": 2}
    for v in meta["videos"]:
        assert set(v) == VIDEO_KEYS and v["label"] == v["name"] and v["kind"] == "video"
        assert set(v["lightness"]) == {"t", "L"} and set(v["objects"]) == {"t", "count", "unique"}
        assert len(v["lightness"]["t"]) == len(v["lightness"]["L"]) == len(v["objects"]["count"])
        assert v["unique_classes"] == len(v["classes"])
        assert all(u <= min(c, 2) for u, c in zip(v["objects"]["unique"], v["objects"]["count"], strict=True))


def test_shots_and_cuts_match_the_truth(analysed, concat):
    _, meta = analysed
    bikes = _video(meta, "bikes")
    assert bikes["shots"] == 6 and np.allclose(bikes["cuts_s"], BIKES_CUTS_S, atol=0.04 + 1e-9)
    c = _video(meta, "concat")
    assert c["shots"] == len(concat[1]) + 1 and np.allclose(c["cuts_s"], concat[1], atol=0.04 + 1e-9)
    assert _video(meta, "carphone_pristine")["shots"] == 1


def test_lightness_equals_skimage_on_the_same_frames(analysed, bikes):
    _, meta = analysed
    v = _video(meta, "bikes")
    with av.open(str(bikes)) as c:
        frames = {round(float(f.pts * f.time_base), 6): analysis_frame(f) for f in c.decode(video=0)}
    for t, got in zip(v["lightness"]["t"], v["lightness"]["L"], strict=True):
        ref = rgb2lab(frames[t])[..., 0].mean() / 100
        assert abs(got - ref) < 1e-3, (t, got, ref)
    assert len(v["lightness"]["t"]) == 20  # 10 s at 2 samples per second
    gray = np.full((10, 10, 3), 119, np.uint8)  # sRGB 119 is L* = 50.0
    assert lightness(gray) == pytest.approx(0.5, abs=2e-3)


def test_darker_video_has_a_lower_curve(tmp_path, bikes, analysed):
    _, frames = decode_all(bikes)
    dark = tmp_path / "bikes_dark.mp4"
    encode(dark, [(f * 0.5).astype(np.uint8) for f in frames], fps=25, options={"crf": "12", "preset": "fast"})
    out = tmp_path / "out"
    r = run_cli("analyze", dark, "--out", out, "--fps", "2", "--quiet")
    assert r.returncode == 0, r.stderr
    darker = json.loads((out / "analysis.json").read_text())["videos"][0]["lightness"]["L"]
    normal = _video(analysed[1], "bikes")["lightness"]["L"]
    assert len(darker) == len(normal) and all(d < n - 0.05 for d, n in zip(darker, normal, strict=True))


def test_offline_detector_sees_people_and_faces(analysed):
    _, meta = analysed
    bikes, phone = _video(meta, "bikes"), _video(meta, "carphone_pristine")
    assert bikes["classes"].get("person", 0) >= 2 and max(bikes["objects"]["count"]) >= 1
    assert phone["classes"].get("face", 0) >= len(phone["objects"]["t"]) - 1  # a face in (almost) every sample
    assert set(bikes["classes"]) <= {"person", "face"}


def test_outputs_figure_panels_and_csvs(analysed):
    out, meta = analysed
    with Image.open(out / "figure.png") as im:
        assert im.format == "PNG" and im.size == (1200, 800)  # 2x2 panels at 12x8 in, 100 dpi
    for name in ("panel_a_lightness", "panel_b_objects", "panel_c_classes", "panel_d_shots"):
        with Image.open(out / f"{name}.png") as im:
            assert im.format == "PNG" and im.size == (600, 400)
    rows = (out / "lightness.csv").read_text().splitlines()
    assert rows[0] == "video,t_s,L" and len(rows) - 1 == sum(len(v["lightness"]["t"]) for v in meta["videos"])
    shots = (out / "shots.csv").read_text().splitlines()
    assert len(shots) - 1 == sum(v["shots"] for v in meta["videos"])


def test_cuts_reused_from_a_shard_folder(tmp_path, main_ds, bikes, analysed):
    out = tmp_path / "out"
    r = run_cli("analyze", bikes, "--out", out, "--shards", main_ds, "--fps", "2", "--quiet")
    assert r.returncode == 0, r.stderr
    v = json.loads((out / "analysis.json").read_text())["videos"][0]
    assert v["cuts_from"] == "dataset.json"
    assert np.allclose(v["cuts_s"], _video(analysed[1], "bikes")["cuts_s"])


def test_plugin_detector_and_label_filter(tmp_path, carphone):
    out = tmp_path / "out"
    r = run_cli("analyze", carphone, "--out", out, "--detector", "tests.plugin_detector:make", "--labels",
                "dark thing", "--quiet")
    assert r.returncode == 0, r.stderr
    meta = json.loads((out / "analysis.json").read_text())
    assert meta["detector"] == "test plug-in (bright/dark)"
    assert set(meta["videos"][0]["classes"]) <= {"dark thing"}


def test_torchvision_weights_through_the_weights_api(tmp_path, carphone):
    """Weights come from $TORCH_HOME/hub/checkpoints (torchvision's weights API); --offline never downloads;
    without network the one-line message says which file to put where. Nothing is downloaded here."""
    import torch
    import torchvision.models.detection as det

    hub = tmp_path / "torch" / "hub" / "checkpoints"
    fname = Path(det.FCOS_ResNet50_FPN_Weights.DEFAULT.url).name
    env = {"TORCH_HOME": str(tmp_path / "torch")}
    r = run_cli("analyze", carphone, "--out", tmp_path / "out", "--detector", "fcos", "--offline", env=env)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
    assert f"{hub / fname}: FCOS_ResNet50_FPN_Weights weights not found and --offline forbids" in r.stderr
    assert f"copy {fname} into {hub}" in r.stderr and "--weights FILE" in r.stderr
    dead = "http://127.0.0.1:9"  # no network: every download is refused at once
    r = run_cli("analyze", carphone, "--out", tmp_path / "out", "--detector", "fcos", "--quiet",
                env={**env, "https_proxy": dead, "HTTPS_PROXY": dead, "http_proxy": dead, "HTTP_PROXY": dead})
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
    assert "downloading https://download.pytorch.org/models/" in r.stderr and f"copy {fname} into {hub}" in r.stderr
    assert not (tmp_path / "out" / "analysis.json").exists() and not list(hub.glob("*.pth"))
    torch.manual_seed(0)  # the file a download would have left (random weights: nothing is downloaded in tests)
    hub.mkdir(parents=True, exist_ok=True)
    torch.save(det.fcos_resnet50_fpn(weights=None, weights_backbone=None).state_dict(), hub / fname)
    r = run_cli("analyze", carphone, "--out", tmp_path / "out", "--detector", "fcos", "--offline", "--fps", "0.5",
                "--threshold", "0.0001", "--quiet", env=env)
    assert r.returncode == 0, r.stderr
    meta = json.loads((tmp_path / "out" / "analysis.json").read_text())
    assert "fcos_resnet50_fpn" in meta["detector"] and "COCO" in meta["detector"]
    assert meta["vocabulary"]["size"] == 80
    coco = set(det.FCOS_ResNet50_FPN_Weights.DEFAULT.meta["categories"])
    assert set(meta["videos"][0]["classes"]) <= coco  # random weights: maybe nothing found
    r = run_cli("analyze", carphone, "--out", tmp_path / "out2", "--detector", "fcos", "--weights",
                tmp_path / "missing.pth", env=env)
    assert r.returncode == 2 and "missing.pth: FCOS_ResNet50_FPN_Weights weights not found" in r.stderr


def test_bad_inputs(tmp_path, bikes):
    bad = tmp_path / "notes.mp4"
    bad.write_text("not a video")
    r = run_cli("analyze", bad, "--out", tmp_path / "o")
    assert r.returncode == 2 and "notes.mp4" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert "Traceback" not in r.stderr
    r = run_cli("analyze", bikes, bad, "--out", tmp_path / "o2", "--keep-going", "--quiet", "--fps", "0.5")
    assert r.returncode == 2 and "notes.mp4" in r.stderr
    assert [v["name"] for v in json.loads((tmp_path / "o2" / "analysis.json").read_text())["videos"]] == ["bikes"]
    r = run_cli("analyze", bikes, "--out", tmp_path / "o3", "--detector", "nope")
    assert r.returncode == 2 and "--detector 'nope'" in r.stderr
