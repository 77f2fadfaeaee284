"""One owner of a shard folder's paths and names (`pipeline.format.ShardFolder`), one message for a folder
that is not a finished one, whichever command meets it, and the command lines' shared shape."""

from __future__ import annotations

import json

import pytest

from pipeline.dataset import Dataset
from pipeline.format import FORMAT_VERSION, ShardFolder
from tests.conftest import fresh_dir, run_entry


def test_the_folder_names_every_file_the_writer_made(main_ds):
    folder = ShardFolder(main_ds)
    meta = folder.read_index()
    assert folder.is_finished() and folder.index.name == "dataset.json" and meta["format"] == FORMAT_VERSION
    assert folder.saved_settings() == json.loads(folder.index.read_text())["settings"]
    assert sorted(p.name for p in folder.shards_dir.glob("*.tar")) == [ShardFolder.shard_name(i)
                                                                         for i in range(len(meta["shards"]))]
    for v in meta["videos"]:
        assert v["frames_table"] == ShardFolder.frames_table_name(v["name"]) and (main_ds / v["frames_table"]).exists()
    assert Dataset(main_ds).shard_path(0) == folder.shards_dir / ShardFolder.shard_name(0)
    assert not folder.work.exists()  # a finished folder keeps no work in progress


def test_work_in_progress_paths_and_saved_settings(tmp_path):
    folder = ShardFolder(tmp_path / "wt")
    assert folder.read_index() is None and folder.saved_settings() is None
    assert folder.unit_record("bikes", 7) == tmp_path / "wt" / ".work" / "bikes" / "u00007.json"
    assert folder.unit_blob("bikes", 7).name == "u00007.jpg.bin" and folder.video_record("bikes").name == "video.json"
    folder.work.mkdir(parents=True)
    folder.settings_file.write_text(json.dumps({"fps": 4.0}))
    assert folder.saved_settings() == {"fps": 4.0}


def _not_a_folder(r, where: str) -> None:
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    assert lines[0] == (f"error: {where}/dataset.json: not found, {where} is not a finished shard folder; "
                        f"make it with `dora-data shard --out {where}`")


@pytest.mark.parametrize("command", [
    ("dora-data", "verify", "nowhere"),
    ("dora-data", "clips", "nowhere"),
    ("dora-data", "analyze", "{video}", "--shards", "nowhere"),
    ("dora-train", "--shards", "nowhere", "--config", "smoke"),
    ("dora-eval", "tracking", "run.pth", "--shards", "nowhere"),
])
def test_every_command_says_the_same_line_for_a_folder_that_is_not_a_shard_folder(command, bikes):
    prog, *args = command
    r = run_entry(prog, *[a.format(video=bikes) for a in args], cwd=fresh_dir())
    _not_a_folder(r, "nowhere")


def test_a_folder_with_pending_units_says_what_to_run(tmp_path):
    (tmp_path / "wt" / ".work").mkdir(parents=True)
    r = run_entry("dora-data", "verify", "wt", cwd=tmp_path)
    assert r.returncode == 2 and "no video was recorded yet: rerun `dora-data shard --out wt`" in r.stderr


def test_dora_train_export_is_a_real_subcommand_and_training_stays_the_default():
    r = run_entry("dora-train", "export", "--help")
    assert r.returncode == 0 and "--to" in r.stdout and "CHECKPOINT" in r.stdout
    r = run_entry("dora-train", "--help")
    assert r.returncode == 0 and "--shards" in r.stdout and "dora-train export" in r.stdout
    r = run_entry("dora-train", "export", "missing.pth", "--to", "timm", "out.safetensors")
    assert r.returncode == 2 and r.stderr.strip() == "error: missing.pth: checkpoint not found; check the path"


def test_shard_names_the_cut_detector_as_analyze_does():
    r = run_entry("dora-data", "shard", "--help")
    assert r.returncode == 0 and "--cut-detector" in r.stdout
    for flag in ("--cut-detector", "--detector"):  # --detector: its former name, still accepted
        r = run_entry("dora-data", "shard", "missing.mp4", flag, "content")
        assert r.returncode == 2 and "missing.mp4" in r.stderr and "no such option" not in r.stderr
