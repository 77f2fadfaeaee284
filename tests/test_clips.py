"""The sampling contract, checked on clips drawn from real shards."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from pipeline.dataset.clips import ClipSampler, ClipSpec, clip_rows
from pipeline.dataset.reader import Dataset
from tests.conftest import run_cli

SPEC = ClipSpec(4, 0.5)  # the main folder's shots are 2-3 s long


@pytest.fixture(scope="module")
def sampler(main_ds) -> ClipSampler:
    return ClipSampler([Dataset(main_ds)], SPEC, seed=3)


def test_no_clip_crosses_a_cut_and_spacing_holds(sampler):
    ds = sampler.datasets[0]
    shots = {v["name"]: np.array(v["shots"]) for v in ds.videos}
    seen_videos = set()
    for p in range(len(sampler)):
        c = sampler.clip(p)
        seen_videos.add(c.video)
        start, end = shots[c.video][c.shot]
        assert all(start <= t < end for t in c.times), (c, start, end)
        gaps = np.diff(c.times)
        assert np.all(np.abs(gaps - SPEC.stride_s) <= 0.5 / 10 + 1e-9), c  # half a stored-frame period
    assert seen_videos == {v["name"] for v in ds.videos}


def _brute_force_starts(t: np.ndarray, shot: np.ndarray, tol: float) -> set[int]:
    out = set()
    for i in range(len(t)):
        targets = t[i] + SPEC.stride_s * np.arange(1, SPEC.frames)
        if all(np.any((shot == shot[i]) & (np.abs(t - x) <= tol)) for x in targets):
            out.add(i)
    return out


def test_every_frame_with_room_in_its_shot_starts_exactly_one_clip(sampler):
    ds = sampler.datasets[0]
    n_expected = 0
    for v in ds.videos:
        tab = ds.table(v["name"])
        starts = set(clip_rows(tab.t, tab.shot, 10.0, SPEC)[:, 0].tolist())
        assert starts == _brute_force_starts(tab.t, tab.shot, 0.05 + 1e-6), v["name"]
        end = tab.shots[tab.shot, 1]
        span = (SPEC.frames - 1) * SPEC.stride_s
        assert set(np.nonzero(tab.t + span + 0.05 < end)[0].tolist()) <= starts  # room for T-1 successors
        assert starts <= set(np.nonzero(tab.t + span - 0.05 < end)[0].tolist())
        n_expected += len(starts)
    assert len(sampler) == n_expected
    epoch = sorted((c.video, c.rows[0]) for c in map(sampler.clip, range(len(sampler))))
    assert len(set(epoch)) == len(epoch)  # one epoch = each valid start once


def test_stream_is_deterministic_and_ranks_are_disjoint(main_ds, sampler):
    again = ClipSampler([Dataset(main_ds)], SPEC, seed=3)
    assert [sampler.clip(p) for p in range(20)] == [again.clip(p) for p in range(20)]
    other_seed = ClipSampler([Dataset(main_ds)], SPEC, seed=4)
    assert [sampler.clip(p).rows for p in range(20)] != [other_seed.clip(p).rows for p in range(20)]
    ranks = [ClipSampler([Dataset(main_ds)], SPEC, seed=3, rank=r, world=3) for r in range(3)]
    drawn = [{(c.video, c.rows[0]) for c in map(s.clip, range(len(s)))} for s in ranks]
    assert not (drawn[0] & drawn[1]) and not (drawn[1] & drawn[2]) and not (drawn[0] & drawn[2])
    assert sum(map(len, drawn)) == 3 * (len(sampler) // 3)
    n = len(sampler)
    assert sampler.clip(n).rows != sampler.clip(0).rows or sampler.clip(n + 1).rows != sampler.clip(1).rows


def test_clips_command_json_and_grid(main_ds, tmp_path):
    grid = tmp_path / "grid.png"
    r = run_cli("clips", main_ds, "--n", "5", "--seed", "1", "--clip-frames", "4", "--clip-stride-s", "0.5",
                "--json", "--grid", grid)
    assert r.returncode == 0, r.stderr
    lines = [json.loads(x) for x in r.stdout.splitlines()]
    assert len(lines) == 5
    ref = ClipSampler([Dataset(main_ds)], SPEC, seed=1)
    for p, line in enumerate(lines):
        assert {"video", "shot", "times"} <= set(line) and len(line["times"]) == 4
        assert line["times"] == list(ref.clip(p).times)
    with Image.open(grid) as im:
        assert im.format == "PNG" and im.width > 4 * 150 and im.height > 5 * 60


def test_clips_command_default_spec_too_long(main_ds):
    r = run_cli("clips", main_ds, "--n", "2", "--clip-frames", "8", "--clip-stride-s", "1")  # no shot is 7 s long
    assert r.returncode == 2 and "no shot is long enough" in r.stderr and "Traceback" not in r.stderr
