"""The on-disk format: real WebDataset and DALI read it; dataset.json says what is there."""

from __future__ import annotations

import json
import tarfile

import numpy as np
import pytest

from pipeline.dataset.reader import Dataset
from pipeline.format.tario import index_path, read_index
from pipeline.shard.settings import ShardSettings, WindowGeometry
from tests.conftest import damaged_copy, run_cli

VIDEO_KEYS = {"name", "source", "sha256", "duration_s", "fps_source", "fps_stored", "size", "n_frames", "shots",
              "faces_blurred"}
SHARD_KEYS = {"name", "n_samples", "n_frames", "bytes"}


def test_manifest_schema(main_ds, main_inputs):
    meta = json.loads((main_ds / "dataset.json").read_text())
    assert meta["format"] == 1 and meta["settings"]["blur_faces"] is True
    assert {v["name"] for v in meta["videos"]} == {"bikes", "carphone_pristine", "concat", "concat_vfr"}
    for v in meta["videos"]:
        assert set(v) >= VIDEO_KEYS
        assert len(v["sha256"]) == 64 and v["n_frames"] > 0 and v["fps_stored"] == 10.0
    import hashlib

    bikes = next(v for v in meta["videos"] if v["name"] == "bikes")
    assert bikes["sha256"] == hashlib.sha256(main_inputs[0].read_bytes()).hexdigest()
    assert bikes["size"] == [640, 272] and bikes["duration_s"] == pytest.approx(10.0)
    carphone = next(v for v in meta["videos"] if v["name"] == "carphone_pristine")
    assert carphone["faces_blurred"] >= carphone["n_frames"]
    for s in meta["shards"]:
        assert set(s) >= SHARD_KEYS
        assert (main_ds / "shards" / s["name"]).stat().st_size == s["bytes"]
    assert sum(s["n_frames"] for s in meta["shards"]) >= sum(v["n_frames"] for v in meta["videos"])


def test_webdataset_reads_every_sample(main_ds):
    import webdataset as wds

    ds = Dataset(main_ds)
    urls = [str(ds.shard_path(i)) for i in range(len(ds.shards))]
    n_samples, n_frames = 0, 0
    for sample in wds.WebDataset(urls, shardshuffle=False):
        header = json.loads(sample["json"])
        jpgs = sorted(k for k in sample if k.endswith(".jpg"))
        assert len(jpgs) == len(header["t"]) == len(header["index"]) == len(header["faces"])
        assert np.all(np.diff(header["t"]) > 0)
        assert sample["__key__"] == f"{header['video']}_s{header['shot']:05d}_w{header['window']:04d}"
        n_samples += 1
        n_frames += len(jpgs)
    assert n_samples == sum(s["n_samples"] for s in ds.shards)
    assert n_frames == sum(s["n_frames"] for s in ds.shards)


def test_index_files_equal_dalis_wds2idx(main_ds, tmp_path):
    import wds2idx  # ships with nvidia-dali, part of the test extra
    ds = Dataset(main_ds)
    for i in range(len(ds.shards)):
        tar = ds.shard_path(i)
        ref = tmp_path / f"{i}.idx"
        creator = wds2idx.IndexCreator(str(tar), str(ref), verbose=False)
        creator.create_index()
        creator.close()
        assert index_path(tar).read_text() == ref.read_text()


def test_dali_reader_reads_shards(main_ds):
    """DALI's own webdataset reader (CPU) walks our shards with our indexes."""
    from nvidia.dali import fn, pipeline_def

    ds = Dataset(main_ds)
    paths = [str(ds.shard_path(i)) for i in range(len(ds.shards))]

    @pipeline_def(batch_size=4, num_threads=1, device_id=None)
    def pipe():
        header, first = fn.readers.webdataset(paths=paths, index_paths=[str(index_path(ds.shard_path(i)))
                                                                       for i in range(len(ds.shards))],
                                              ext=["json", "0000.jpg"], missing_component_behavior="error")
        return header, fn.decoders.image(first, device="cpu")

    p = pipe()
    p.build()
    header, img = p.run()
    assert json.loads(bytes(np.array(header[0])))["video"]
    assert np.array(img[0]).ndim == 3


def test_videos_are_mixed_within_shards(main_ds):
    ds = Dataset(main_ds)
    assert len(ds.shards) >= 2
    assert any(len(s["videos"]) >= 2 for s in ds.shards)
    # consecutive samples of a shard mostly come from different videos
    with tarfile.open(ds.shard_path(0)) as tar:
        videos = [json.loads(tar.extractfile(m).read())["video"] for m in tar if m.name.endswith(".json")]
    assert len(set(videos)) >= 2


def test_frame_table_points_at_the_shard_copy(main_ds):
    ds = Dataset(main_ds)
    for v in ds.videos:
        tab = ds.table(v["name"])
        assert np.all(tab.shard >= 0)
        idx_offsets = {(s["name"], m.offset): m.size for s in ds.shards
                       for sample in read_index(index_path(main_ds / "shards" / s["name"])) for m in sample}
        for r in range(0, len(tab), 7):
            assert idx_offsets[(ds.shards[tab.shard[r]]["name"], int(tab.offset[r]))] == tab.size[r]


def test_duplication_within_budget_with_long_shots(tmp_path, bbb):
    """A 5.3 s single-shot video stored at 25 fps in 4 s windows: windows overlap by a clip's span."""
    out = tmp_path / "dup"
    r = run_cli("shard", bbb, "--out", out, "--fps", "25", "--clip-frames", "3", "--clip-stride-s", "0.5",
                "--window-s", "4", "--workers", "1", "--quiet")
    assert r.returncode == 0, r.stderr
    report = json.loads(run_cli("verify", out, "--json", "--sample", "1").stdout)
    assert report["ok"], report["errors"]
    assert report["samples"] == 2  # overlapping windows were needed ...
    assert 1.0 < report["duplication"] <= 1.3  # ... and cost little
    # streaming contract: every clip lies inside the window that owns its start
    from pipeline.dataset.clips import ClipSampler, ClipSpec

    ds = Dataset(out)
    sampler = ClipSampler([ds], ClipSpec(3, 0.5))
    with tarfile.open(ds.shard_path(0)) as tar:
        headers = [json.loads(tar.extractfile(m).read()) for m in tar if m.name.endswith(".json")]
    owners = []
    for h in headers:
        a, b = h["owned_starts"]
        owners += [(t, set(h["index"])) for t in h["index"][a:b]]
    assert sorted(t for t, _ in owners) == sorted(ds.table("bigbuckbunny").index.tolist())  # each start owned once
    owner = dict(owners)
    for p in range(len(sampler)):
        c = sampler.clip(p)
        assert set(c.frame_index) <= owner[c.frame_index[0]]


@pytest.mark.parametrize("shot_frames", [1, 50, 400, 401, 729, 730, 5000])
def test_default_windows_cover_every_clip_and_cost_at_most_1_3(shot_frames):
    geo = WindowGeometry.from_settings(ShardSettings(), 10.0)
    assert geo.length / geo.hop <= 1.3
    wins = geo.windows(shot_frames)
    assert wins[0][0] == 0 and wins[-1][1] == shot_frames
    span = 70 + 1  # 8 frames 1 s apart at 10 fps, plus one frame of timing slack
    for start in range(0, max(0, shot_frames - span)):
        w = min(start // geo.hop, len(wins) - 1)
        assert wins[w][0] <= start and start + span < wins[w][1]


def test_verify_passes_and_catches_damage(main_ds, tmp_path):
    r = run_cli("verify", main_ds, "--json", "--sample", "1")
    report = json.loads(r.stdout)
    assert r.returncode == 0 and report["ok"]
    assert report["shards"] >= 2 and report["frames"] == report["distinct_frames"]
    assert report["duplication"] == pytest.approx(1.0)
    broken = damaged_copy(main_ds, tmp_path / "broken", "bikes", [5], 200)  # one JPEG loses its end
    ds = Dataset(broken)
    path = ds.shard_path(int(ds.table("bikes").shard[5]))
    data = path.read_bytes()
    r = run_cli("verify", broken, "--json", "--sample", "1")
    bad = json.loads(r.stdout)
    assert r.returncode != 0 and not bad["ok"] and any("JPEG" in e for e in bad["errors"])
    path.write_bytes(bytes(data[: len(data) // 2]))  # truncate the tar
    bad = json.loads(run_cli("verify", broken, "--json").stdout)
    assert not bad["ok"] and any(path.name in e for e in bad["errors"])
