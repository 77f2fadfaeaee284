"""The trainer logs the health statistics (dora/train/health.py) for DoRA and DINO alike, and warns once
when the collapse watch fires."""

from __future__ import annotations

import json
import math

import pytest

from tests.test_train import SMOKE, train_cli

HEALTH = {"loss", "loss_global", "loss_local", "teacher_entropy", "teacher_top_mass", "kl_teacher_student",
          "center_norm", "student_std", "teacher_std", "effective_rank", "mask_coverage_student", "collapse",
          "collapse_kind"}


@pytest.fixture(scope="module")
def records(main_ds, tmp_path_factory) -> dict[str, tuple[list[dict], str]]:
    out = {}
    for method in ("dora", "dino"):
        run = tmp_path_factory.mktemp(method) / "run"
        extra = ["train.collapse_entropy=0.01", "train.collapse_logs=2"] if method == "dino" else []
        r = train_cli("--shards", main_ds, "--config", SMOKE, "--output", run, "--quiet", "train.epochs=0.1",
                      f"dora.method={method}", "train.checkpoint_every=100", "train.maps_every=100", *extra)
        assert r.returncode == 0, r.stderr
        out[method] = ([json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()], r.stderr)
    return out


def test_every_log_carries_the_health_statistics_for_both_methods(records):
    dora, dino = records["dora"][0], records["dino"][0]
    assert len(dora) >= 3 and len(dino) == len(dora)
    assert set(dora[0]) >= HEALTH | {"map_entropy", "mask_coverage"}
    assert set(dino[0]) == set(dora[0]) - {"map_entropy", "mask_coverage"}  # the same quantities
    assert all(set(r) == set(dora[0]) for r in dora) and all(set(r) == set(dino[0]) for r in dino)
    ln_k = math.log(256)  # smoke.yaml: model.out_dim
    for r in dora + dino:
        assert all(math.isfinite(r[k]) for k in HEALTH - {"collapse", "collapse_kind"})
        assert 0 < r["teacher_entropy"] < 1 and 0 < r["teacher_top_mass"] <= 1 and r["kl_teacher_student"] >= 0
        assert 1 <= r["effective_rank"] <= 15  # 2 clips x 4 frames x 2 views, centred
        # per-term losses on the scale of ln K, per pair: the same for both methods
        assert 0.2 * ln_k < r["loss_global"] < 2 * ln_k and 0.2 * ln_k < r["loss_local"] < 2 * ln_k
    for r in dora:
        assert r["loss"] == pytest.approx(r["loss_global"] + r["loss_local"], rel=1e-5)  # eq. 10
        assert 0 < r["mask_coverage_student"] < 1
    for r in dino:
        assert min(r["loss_global"], r["loss_local"]) <= r["loss"] <= max(r["loss_global"], r["loss_local"])
        assert r["mask_coverage_student"] == 1.0
    assert not any(r["collapse"] for r in dora) and "warning" not in records["dora"][1]


def test_the_collapse_warning_is_one_line_and_the_flag_is_in_the_records(records):
    recs, stderr = records["dino"]  # a threshold every teacher exceeds: flagged near-uniform from the 2nd log
    assert [r["collapse"] for r in recs] == [False] + [True] * (len(recs) - 1)
    assert [r["collapse_kind"] for r in recs] == [None] + ["uniform"] * (len(recs) - 1)
    warnings = [line for line in stderr.splitlines() if "warning" in line]
    assert len(warnings) == 1 and warnings[0].startswith("dora-train: warning: the teacher has been near-uniform")
    assert warnings[0].endswith("for 2 logs in a row: collapse; see README 'Is it learning?'")
