"""`dora-eval discovery`: the CorLoc sheet names its colours, an inverted VOC box is refused before any
work, and resume is keyed on the model actually built (--config) with --restart."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image

from tests.conftest import run_entry
from tests.evaldata import tiny_checkpoint, voc_xml, write_voc


def eval_cli(cwd, *args):
    """`dora-eval ARGS` run as a person types it, in `cwd`."""
    return run_entry("dora-eval", *args, cwd=cwd)


def one_line_error(r, *expect: str) -> None:
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert all(e in r.stderr for e in expect), r.stderr


def test_corloc_sheet_has_a_legend_naming_its_colours(tmp_path):
    from dora.eval.discovery import GT_COLOUR, HIT_COLOUR, MISS_COLOUR, draw_sheet

    ids = write_voc(tmp_path / "voc", 2007, 3)
    jpg = tmp_path / "voc" / "VOC2007" / "JPEGImages"
    items = [(jpg / f"{ids[0]}.jpg", np.array([10.0, 10, 50, 50]), np.array([[12.0, 12, 48, 48]]), True),
             (jpg / f"{ids[1]}.jpg", np.array([60.0, 5, 90, 30]), np.array([[10.0, 40, 40, 90]]), False)]
    path = draw_sheet(items, tmp_path / "sheet.png", tile_h=160, cols=4)
    with Image.open(path) as im:
        sheet = np.array(im.convert("RGB"))
    assert sheet.shape[0] > 160  # one row of tiles and a legend band below it
    band = sheet[160:]

    def has(colour) -> bool:
        return bool(np.all(band == np.array(colour, np.uint8), axis=-1).any())

    assert has(GT_COLOUR) and has(HIT_COLOUR) and has(MISS_COLOUR)  # the swatches
    assert (band.max(axis=-1) < 80).sum() > 100  # and the words next to them (dark text)


def test_inverted_voc_box_is_refused_before_any_work(tmp_path):
    ids = write_voc(tmp_path / "voc", 2007, 3)
    xml = tmp_path / "voc" / "VOC2007" / "Annotations" / f"{ids[1]}.xml"
    xml.write_text(voc_xml([(10, 10, 40, 40), (60, 12, 30, 50)], (96, 128)))  # xmin 60 > xmax 30
    tiny_checkpoint(tmp_path / "tiny.pth")
    r = eval_cli(tmp_path, "discovery", "tiny.pth", "--voc", "voc", "--year", "2007", "--device", "cpu", "--quiet")
    named = str(xml.relative_to(tmp_path))  # as the user gave the folder
    one_line_error(r, named, "xmin 60 > xmax 30")
    assert not (tmp_path / "runs" / "eval" / "discovery" / "corloc.jsonl").exists()  # nothing computed
    xml.write_text(voc_xml([(10, 50, 40, 20)], (96, 128)))
    r = eval_cli(tmp_path, "discovery", "tiny.pth", "--voc", "voc", "--year", "2007", "--device", "cpu", "--quiet")
    one_line_error(r, named, "ymin 50 > ymax 20")


def test_resume_refuses_another_model_config_and_restart_starts_fresh(tmp_path):
    write_voc(tmp_path / "voc", 2007, 3)
    tiny_checkpoint(tmp_path / "tiny.pth")
    six = tmp_path / "six_heads.yaml"  # the same weights read as another model
    six.write_text("model:\n  arch: vit_tiny_patch16_224\n  depth: 2\n  num_heads: 6\n")
    args = ("discovery", "tiny.pth", "--voc", "voc", "--year", "2007", "--device", "cpu", "--quiet")
    r = eval_cli(tmp_path, *args)
    assert r.returncode == 0, r.stderr
    log = tmp_path / "runs" / "eval" / "discovery" / "corloc.jsonl"
    first = log.read_text()
    r = eval_cli(tmp_path, *args, "--config", six)
    one_line_error(r, "another run", "heads", "--restart")
    assert log.read_text() == first
    r = eval_cli(tmp_path, *args, "--config", six, "--restart")
    assert r.returncode == 0, r.stderr
    lines = log.read_text().splitlines()
    assert len(lines) == 4 and lines[0] != first.splitlines()[0]  # a new stamp and 3 new images
    rec = json.loads((tmp_path / "runs" / "eval" / "discovery" / "metrics.json").read_text())
    assert rec["arch"]["num_heads"] == 6 and rec["corloc"]["n_images"] == 3
    r = eval_cli(tmp_path, *args, "--config", six)  # the same run again: resumed, nothing recomputed
    assert r.returncode == 0, r.stderr
    assert log.read_text().splitlines() == lines
