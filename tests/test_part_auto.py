"""`shard --part auto`: each process takes its part from SLURM's or torchrun's environment. Parts started
side by side, then `index`, give the bytes of one whole run, also after one part is killed with kill -9 and
rerun; each part keeps its own log under DIR/logs/, which is not part of the dataset."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.errors import InputError
from pipeline.shard import Part, local_rank, local_world_size, parse_part, part_from_env
from pipeline.shard.parts import default_workers, resolve_part
from tests.conftest import cli_env, entry_point, folder_digest, fresh_dir, kill_when, run_cli

OPTS = ["--quiet", "--fps", "4", "--short-side", "64", "--segment-s", "1", "--clip-frames", "4",
        "--clip-stride-s", "0.5"]  # bikes (10 s): 10 units, carphone (4 s): 4 units
N_UNITS = 14
LAUNCHER_VARS = re.compile(r"SLURM_.*|RANK|WORLD_SIZE|LOCAL_RANK|LOCAL_WORLD_SIZE|GROUP_RANK|TORCHELASTIC_.*")


# ---- the rules, on plain mappings

def test_a_slurm_array_gives_id_of_count():
    part = part_from_env({"SLURM_ARRAY_TASK_ID": "2", "SLURM_ARRAY_TASK_COUNT": "8"})
    assert part == Part(2, 8, "SLURM_ARRAY_TASK_ID/SLURM_ARRAY_TASK_COUNT")
    assert str(part) == "part 2/8 from SLURM_ARRAY_TASK_ID/SLURM_ARRAY_TASK_COUNT"
    sbatch = {"SLURM_ARRAY_TASK_ID": "5", "SLURM_ARRAY_TASK_COUNT": "16", "SLURM_ARRAY_TASK_MIN": "0",
              "SLURM_ARRAY_TASK_MAX": "15", "SLURM_ARRAY_TASK_STEP": "1"}  # all that `--array=0-15` sets
    assert part_from_env(sbatch).pair == (5, 16)
    one_based = {**sbatch, "SLURM_ARRAY_TASK_ID": "16", "SLURM_ARRAY_TASK_MIN": "1", "SLURM_ARRAY_TASK_MAX": "16"}
    assert part_from_env(one_based).pair == (15, 16)  # --array=1-16: ids count from MIN


def test_a_slurm_array_without_count_uses_min_and_max():
    part = part_from_env({"SLURM_ARRAY_TASK_ID": "12", "SLURM_ARRAY_TASK_MIN": "10", "SLURM_ARRAY_TASK_MAX": "13"})
    assert part.pair == (2, 4) and "SLURM_ARRAY_TASK_MIN" in part.source


@pytest.mark.parametrize("env, said", [
    ({"SLURM_ARRAY_TASK_ID": "4", "SLURM_ARRAY_TASK_COUNT": "4", "SLURM_ARRAY_TASK_MIN": "0",
      "SLURM_ARRAY_TASK_MAX": "6", "SLURM_ARRAY_TASK_STEP": "2"}, "has a step (SLURM_ARRAY_TASK_STEP=2)"),
    ({"SLURM_ARRAY_TASK_ID": "9", "SLURM_ARRAY_TASK_MIN": "0", "SLURM_ARRAY_TASK_MAX": "7"},
     "SLURM_ARRAY_TASK_ID=9 is outside SLURM_ARRAY_TASK_MIN..MAX (0..7)"),
    ({"SLURM_ARRAY_TASK_ID": "3", "SLURM_ARRAY_TASK_COUNT": "3", "SLURM_ARRAY_TASK_MIN": "0",
      "SLURM_ARRAY_TASK_MAX": "7"}, "has 3 tasks, not 8"),
    ({"SLURM_ARRAY_TASK_ID": "3"}, "neither SLURM_ARRAY_TASK_COUNT nor SLURM_ARRAY_TASK_MIN/MAX"),
    ({"SLURM_ARRAY_TASK_ID": "8", "SLURM_ARRAY_TASK_COUNT": "8"}, "give part 8 of 8, not one of 0..7"),
    ({"SLURM_PROCID": "x", "SLURM_NTASKS": "4"}, "SLURM_PROCID='x' is not a whole number"),
    ({"RANK": "4", "WORLD_SIZE": "4"}, "RANK/WORLD_SIZE give part 4 of 4"),
])
def test_arrays_and_counts_that_name_no_part_are_refused(env, said):
    with pytest.raises(InputError) as e:
        part_from_env(env)
    assert said in str(e.value) and "--part i/n" in str(e.value) and "\n" not in str(e.value)


def test_the_order_array_then_srun_then_torchrun():
    array = {"SLURM_ARRAY_TASK_ID": "1", "SLURM_ARRAY_TASK_COUNT": "4"}
    srun = {"SLURM_PROCID": "5", "SLURM_NTASKS": "32"}
    torchrun = {"RANK": "5", "WORLD_SIZE": "32", "LOCAL_RANK": "5", "LOCAL_WORLD_SIZE": "8"}
    assert part_from_env({**array, "SLURM_PROCID": "0", "SLURM_NTASKS": "1"}) == Part(
        1, 4, "SLURM_ARRAY_TASK_ID/SLURM_ARRAY_TASK_COUNT")  # `srun dora-data ...` in an array script: one task
    # an array task that runs 8 processes (srun --ntasks 8, or torchrun): array part x 8 + process, of 4 x 8
    composed = part_from_env({**array, "SLURM_PROCID": "3", "SLURM_NTASKS": "8"})
    assert composed.pair == (1 * 8 + 3, 32) and "SLURM_PROCID/SLURM_NTASKS" in composed.source
    assert part_from_env({**array, **srun, **torchrun}).pair == (1 * 32 + 5, 128)
    assert part_from_env({**srun, **torchrun}) == Part(5, 32, "SLURM_PROCID/SLURM_NTASKS")
    assert part_from_env(torchrun) == Part(5, 32, "RANK/WORLD_SIZE")
    assert part_from_env({"SLURM_PROCID": "0", **torchrun}).source == "RANK/WORLD_SIZE"  # half a pair: not one
    # torchrun started by `srun -N 4` (one task a node): SLURM counts the launchers, RANK the processes
    nested = part_from_env({"SLURM_PROCID": "1", "SLURM_NTASKS": "4", **{**torchrun, "RANK": "13"}})
    assert nested.pair == (13, 32) and nested.source.startswith("RANK/WORLD_SIZE (inside SLURM task 1/4)")


def test_no_launcher_is_one_line_naming_the_variables():
    with pytest.raises(InputError) as e:
        part_from_env({"HOME": "/root", "SLURM_JOB_ID": "7"})
    said = str(e.value)
    for name in ("SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_COUNT", "SLURM_PROCID", "SLURM_NTASKS", "RANK", "WORLD_SIZE",
                 "--part i/n"):
        assert name in said, said


def test_the_part_option():
    assert resolve_part(None, {}) is None
    assert resolve_part("1/4", {"RANK": "0", "WORLD_SIZE": "2"}) == Part(1, 4, "--part")
    assert resolve_part(" Auto ", {"RANK": "0", "WORLD_SIZE": "2"}) == Part(0, 2, "RANK/WORLD_SIZE")
    with pytest.raises(InputError, match="expected i/n with 0 <= i < n.*or --part auto"):
        resolve_part("4/4", {})
    from pipeline.shard.units import parse_part as former_home

    assert parse_part("3/8") == former_home("3/8") == (3, 8)


def test_local_rank_and_local_world_size():
    assert (local_rank({}), local_world_size({})) == (0, 1)
    assert (local_rank({"LOCAL_RANK": "3", "LOCAL_WORLD_SIZE": "8", "SLURM_LOCALID": "0"}),
            local_world_size({"LOCAL_WORLD_SIZE": "8", "SLURM_NTASKS_PER_NODE": "1"})) == (3, 8)
    assert (local_rank({"SLURM_LOCALID": "6"}), local_world_size({"SLURM_NTASKS_PER_NODE": "8"})) == (6, 8)
    uneven = {"SLURM_TASKS_PER_NODE": "2(x3),1"}  # 7 tasks on 4 nodes
    assert [local_world_size({**uneven, "SLURM_NODEID": str(k)}) for k in range(4)] == [2, 2, 2, 1]


def test_parts_on_one_node_share_its_cores():
    eight = {"LOCAL_WORLD_SIZE": "8"}
    assert default_workers(None, Part(3, 32), eight, cores=64) == 8
    assert default_workers(None, Part(3, 32), eight, cores=4) == 1
    assert default_workers(5, Part(3, 32), eight, cores=64) == 5  # --workers wins
    assert default_workers(None, None, eight, cores=64) == 64  # a whole run is alone
    assert default_workers(None, Part(0, 4), {}, cores=64) == 64  # one part per node


# ---- real processes

def _env(**launcher: str) -> dict:
    """This test's environment without any launcher's variables, plus `launcher`."""
    return {**{k: v for k, v in cli_env().items() if not LAUNCHER_VARS.fullmatch(k)}, **launcher}


def _start(cwd: Path, inputs, out: str, env: dict, *extra) -> subprocess.Popen:
    return subprocess.Popen([*entry_point("dora-data"), "shard", *map(str, inputs), "--out", out, "--part", "auto",
                             *OPTS, *extra], cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


@pytest.fixture(scope="module")
def inputs(bikes, carphone) -> list[Path]:
    return [bikes, carphone]


@pytest.fixture(scope="module")
def whole(inputs) -> Path:
    cwd = fresh_dir()
    r = run_cli("shard", *inputs, "--out", "wt", *OPTS, "--workers", "1", cwd=cwd)
    assert r.returncode == 0, r.stderr
    assert "whole run: 14 work units, 1 worker" in r.stdout
    log = (cwd / "wt" / "logs" / "shard.log").read_text().splitlines()
    assert log[0].startswith("=== ") and sum(" done in " in line for line in log) == N_UNITS
    assert log[-1].endswith("end: 14/14 units complete; dataset.json: 2 videos, 57 frames, 1 shards"), log[-1]
    return cwd / "wt"


def _run_parts(inputs, launchers: list[dict], *extra) -> tuple[Path, list[subprocess.CompletedProcess]]:
    """Start one `shard --part auto` per launcher environment at once, in one fresh folder; wait for all."""
    cwd = fresh_dir()
    procs = [_start(cwd, inputs, "wt", _env(**env), *extra) for env in launchers]
    done = []
    for p in procs:
        out, err = p.communicate(timeout=600)
        done.append(subprocess.CompletedProcess(p.args, p.returncode, out, err))
    return cwd, done


def _check_logs(out: Path, n: int) -> None:
    """One log a part, each: a header, its start line, a line per unit it made, the end line; all units made once."""
    logs = sorted((out / "logs").iterdir())
    assert [p.name for p in logs] == [f"shard-part-{i}-of-{n}.log" for i in range(n)]
    made = []
    for i, path in enumerate(logs):
        lines = path.read_text().splitlines()
        assert lines[0].startswith("=== ") and "--part auto" in lines[0], lines[0]
        assert f" part {i}/{n} from " in lines[1] and "work units" in lines[1], lines[1]
        units = [re.search(r"unit (u\d+) of (\S+) done in [0-9.]+ s$", line) for line in lines[2:-1]]
        assert all(units), lines
        made += [m.groups() for m in units]
        assert re.search(rf"end: part {i}/{n}: (\d+)/\1 units complete; .*run `dora-data index wt`", lines[-1])
    assert len(made) == len(set(made)) == N_UNITS


def test_a_slurm_array_of_parts_then_index_equals_one_run(inputs, whole):
    array = [{"SLURM_ARRAY_TASK_ID": str(i), "SLURM_ARRAY_TASK_COUNT": "3", "SLURM_ARRAY_TASK_MIN": "0",
              "SLURM_ARRAY_TASK_MAX": "2", "SLURM_ARRAY_TASK_STEP": "1", "SLURM_JOB_ID": "77"} for i in range(3)]
    cwd, runs = _run_parts(inputs, array, "--workers", "2")  # 2 workers: units finish in worker processes
    for i, r in enumerate(runs):
        assert r.returncode == 0, r.stderr
        assert f"part {i}/3 from SLURM_ARRAY_TASK_ID/SLURM_ARRAY_TASK_COUNT: " in r.stdout, r.stdout
        assert "when every part has finished, run `dora-data index wt`" in r.stdout
    assert not (cwd / "wt" / "dataset.json").exists()
    r = run_cli("index", "wt", "--quiet", cwd=cwd)
    assert r.returncode == 0, r.stderr
    assert folder_digest(cwd / "wt") == folder_digest(whole)
    _check_logs(cwd / "wt", 3)
    assert run_cli("verify", "wt", cwd=cwd).returncode == 0


def test_torchrun_parts_share_the_cores_then_index_equals_one_run(inputs, whole):
    ranks = [{"RANK": str(i), "WORLD_SIZE": "3", "LOCAL_RANK": str(i), "LOCAL_WORLD_SIZE": "3"} for i in range(3)]
    cwd, runs = _run_parts(inputs, ranks)  # no --workers: the cores are shared by the 3 processes
    workers = max(1, (os.cpu_count() or 1) // 3)
    for i, r in enumerate(runs):
        assert r.returncode == 0, r.stderr
        assert f"part {i}/3 from RANK/WORLD_SIZE: " in r.stdout, r.stdout
        assert f", {workers} worker{'s' if workers > 1 else ''} (the cores shared by 3 processes" in r.stdout
    assert run_cli("index", "wt", "--quiet", cwd=cwd).returncode == 0
    assert folder_digest(cwd / "wt") == folder_digest(whole)
    _check_logs(cwd / "wt", 3)


def test_a_part_killed_with_kill_9_is_rerun_with_the_same_command(inputs, whole):
    cwd = fresh_dir()
    srun = [_env(SLURM_PROCID=str(i), SLURM_NTASKS="2", SLURM_LOCALID=str(i), SLURM_NTASKS_PER_NODE="2")
            for i in range(2)]
    log = cwd / "wt" / "logs" / "shard-part-0-of-2.log"
    made = lambda: log.read_text().count(" done in ") if log.exists() else 0  # noqa: E731
    victim, other = _start(cwd, inputs, "wt", srun[0], "--workers", "1"), _start(cwd, inputs, "wt", srun[1])
    kill_when(victim, lambda: made() >= 1)  # at least one of its 7 units is done ...
    assert other.wait(timeout=600) == 0, other.stderr.read()
    killed_at = made()
    assert 1 <= killed_at < 7 and "end:" not in log.read_text()  # ... and not all of them
    r = run_cli("index", "wt", cwd=cwd)
    assert r.returncode == 2 and "unfinished" in r.stderr and not (cwd / "wt" / "dataset.json").exists()
    again = _start(cwd, inputs, "wt", srun[0], "--workers", "1")
    out, err = again.communicate(timeout=600)
    assert again.returncode == 0, err
    m = re.search(r"part 0/2 from SLURM_PROCID/SLURM_NTASKS: 7 of 14 work units \((\d+) already complete\)", out)
    assert m and killed_at <= int(m.group(1)) < 7, out
    text = log.read_text()
    assert text.count("\n=== ") + text.startswith("=== ") == 2 and text.count(" done in ") == killed_at + 7 - int(
        m.group(1))  # the killed run's lines, then the rerun's, appended
    assert run_cli("index", "wt", "--quiet", cwd=cwd).returncode == 0
    assert folder_digest(cwd / "wt") == folder_digest(whole)


def test_part_auto_without_a_launcher_is_one_line(inputs):
    cwd = fresh_dir()
    for argv in ([*entry_point("dora-data")], [sys.executable, "-m", "pipeline.cli"]):
        r = subprocess.run([*argv, "shard", *map(str, inputs), "--out", "wt", "--part", "auto", *OPTS], cwd=cwd,
                           env=_env(), capture_output=True, text=True, timeout=120)
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 2 and len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
        assert lines[0].startswith("error: --part auto: no part in the environment (looked for SLURM_ARRAY_TASK_ID")
        assert "--part i/n" in lines[0]
    step = _env(SLURM_ARRAY_TASK_ID="2", SLURM_ARRAY_TASK_MIN="0", SLURM_ARRAY_TASK_MAX="4", SLURM_ARRAY_TASK_STEP="2")
    r = subprocess.run([*entry_point("dora-data"), "shard", *map(str, inputs), "--out", "wt", "--part", "auto",
                        *OPTS], cwd=cwd, env=step, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "SLURM_ARRAY_TASK_STEP=2" in r.stderr, r.stderr
    assert not (cwd / "wt").exists()  # refused before any work: no folder, no log
