"""The README's first command: the demo shards a real CC-BY clip with face blurring."""

from __future__ import annotations

import json

from PIL import Image

from tests.conftest import run_cli


def test_demo_shards_and_writes_preview(tmp_path):
    out = tmp_path / "demo"
    r = run_cli("demo", "--out", out, "--workers", "2")
    assert r.returncode == 0, r.stderr
    assert f"{out.resolve()}/dataset.json" in r.stdout and f"{(out / 'preview.png').resolve()}" in r.stdout
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["settings"]["blur_faces"] is True
    v = meta["videos"][0]
    assert v["name"] == "bigbuckbunny" and v["size"] == [1280, 720] and v["n_frames"] == 53
    with Image.open(out / "preview.png") as im:
        assert im.format == "PNG" and im.width >= 8 * 160
    report = json.loads(run_cli("verify", out, "--json", "--sample", "1").stdout)
    assert report["ok"] and report["frames"] == 53
