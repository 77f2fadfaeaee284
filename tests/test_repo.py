"""The repository keeps its promises: README commands, CI, small size."""

from __future__ import annotations

import re
import subprocess

from tests.conftest import ROOT


def _readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    return re.findall(r"```bash\n(.+?)\n```", text)[:2]


def test_readme_starts_with_demo_and_test_commands():
    demo, tests = _readme_commands()
    assert "dora-data demo" in demo and 'pip install -e ".[demo]"' in demo
    assert "pytest" in tests and 'pip install -e ".[test]"' in tests


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text()
    assert _readme_commands()[1] in ci.splitlines()


def test_no_media_or_large_files_tracked():
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True).stdout.split()
    media = [f for f in files if f.rsplit(".", 1)[-1].lower() in {"mp4", "mkv", "webm", "avi", "tar", "jpg", "png"}]
    assert not media
    assert all((ROOT / f).stat().st_size < 1_000_000 for f in files if (ROOT / f).exists())
