"""The README's command block, run in order from an empty folder with relative paths and default folders.

Only what makes it small is added to each line (a catalog pointing at a local server instead of YouTube,
few stored frames, the smoke model as key=value overrides); every output folder is the command's default.
"""

from __future__ import annotations

import re
import shlex
import shutil

import yaml

from tests.conftest import ROOT, run_entry
from tests.httpserver import FileServer

ORDER = [("dora-data", "fetch"), ("dora-data", "shard"), ("dora-data", "verify"), ("dora-data", "clips"),
         ("dora-train", None), ("dora-data", "analyze"), ("dora-eval", "attention")]


def readme_block() -> list[list[str]]:
    """The commands of the README's overview block (the plain ``` block that starts with `dora-data fetch`)."""
    text = (ROOT / "README.md").read_text()
    block = next(b for b in re.findall(r"```\n(.+?)\n```", text, re.S) if b.startswith("dora-data fetch"))
    return [shlex.split(line.split("  #")[0]) for line in block.splitlines() if line.strip()]


def _flat(d: dict, prefix: str = "") -> list[str]:
    out = []
    for k, v in d.items():
        out += _flat(v, f"{prefix}{k}.") if isinstance(v, dict) else [f"{prefix}{k}={v}"]
    return out


def _key(cmd: list[str]) -> tuple[str, str | None]:
    return (cmd[0], None) if cmd[0] == "dora-train" else (cmd[0], cmd[1])


def test_readme_block_runs_from_an_empty_folder(tmp_path, carphone):
    commands = readme_block()
    assert [_key(c) for c in commands] == ORDER
    www = tmp_path / "www"
    www.mkdir()
    shutil.copy(carphone, www / "walk01.mp4")
    cwd = tmp_path / "empty"
    cwd.mkdir()
    smoke = _flat(yaml.safe_load((ROOT / "configs" / "smoke.yaml").read_text()))
    with FileServer(www) as server:
        (cwd / "walks.csv").write_text(f"name,id,url,city,license,notes\nwalk,,{server.url('walk01.mp4')},,,\n")
        extra = {
            ("dora-data", "fetch"): ["--catalog", "walks.csv", "--allow-license", "--quiet", "--retry-wait", "0"],
            ("dora-data", "shard"): ["--workers", "1", "--quiet", "--fps", "4", "--clip-frames", "4",
                                     "--clip-stride-s", "0.5"],
            ("dora-data", "verify"): ["--sample", "1"],
            ("dora-data", "clips"): ["--n", "2"],
            ("dora-train", None): ["--quiet", *smoke, "train.epochs=0.4"],
            ("dora-data", "analyze"): ["--fps", "0.5", "--workers", "1", "--quiet"],
            ("dora-eval", "attention"): ["--size", "64"],
        }
        for cmd in commands:
            r = run_entry(cmd[0], *cmd[1:], *extra[_key(cmd)], cwd=cwd)
            assert r.returncode == 0, f"{shlex.join(cmd)}:\n{r.stderr[-3000:]}"
            assert "Traceback" not in r.stderr
    assert (cwd / "data" / "raw" / "walk" / "walk01.mp4.sha256").exists()
    assert (cwd / "data" / "wt_all" / "dataset.json").exists()
    assert (cwd / "clips.png").exists()
    assert list((cwd / "runs" / "dora_vits16" / "checkpoints").glob("step_*.pth"))
    assert (cwd / "runs" / "analysis" / "figure.png").exists()
    assert (cwd / "runs" / "eval" / "attention_clips.png").exists()
    assert sorted(p.name for p in cwd.iterdir()) == ["clips.png", "data", "runs", "walks.csv"]
