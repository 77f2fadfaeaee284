"""The layout keeps its rules: one package per stage, packages meet only through their public names,
the libraries never import a command line, and no module grows past a readable size."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import ROOT

TOPS = ("pipeline", "dora")
CLIS = {"pipeline.cli", "dora.train_cli", "dora.eval_cli", "dora.eval_cli_dense"}


def _modules() -> list[tuple[Path, tuple[str, ...]]]:
    return [(f, f.relative_to(ROOT).with_suffix("").parts) for top in TOPS for f in sorted((ROOT / top).rglob("*.py"))]


def _imports(path: Path) -> list[str]:
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out += [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            out += [a.name for a in node.names]
    return out


def _interface(package: str) -> set[str]:
    """The names a package offers other packages: its `__all__`."""
    tree = ast.parse((ROOT / package.replace(".", "/") / "__init__.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "__all__" for t in node.targets):
            return set(ast.literal_eval(node.value))
    return set()


def _internal_reach(path: Path, parts: tuple[str, ...]) -> list[str]:
    """Imports of another package's modules or of names it does not offer, instead of its interface."""
    own = ".".join(parts[:2]) if len(parts) > 2 else None
    bad = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        for name in names:
            p = name.split(".")
            package = ".".join(p[:2])
            if p[0] not in TOPS or len(p) < 3 or package == own or not (ROOT / p[0] / p[1]).is_dir():
                continue
            if len(p) > 3 or p[2] not in _interface(package):
                bad.append(name)
    return bad


def test_packages_meet_only_through_their_interfaces():
    bad = {f"{'/'.join(parts)}.py": reach for f, parts in _modules() if (reach := _internal_reach(f, parts))}
    assert not bad, f"import the package, not its module: {bad}"


def test_the_interface_rule_catches_a_reach_into_a_module(tmp_path):
    probe = ROOT / "pipeline" / "analyze" / "probe_for_test.py"
    probe.write_text("from pipeline.shard.cuts import CutTracker\nfrom pipeline.shard import FaceDetector\n")
    try:
        assert _internal_reach(probe, ("pipeline", "analyze", "probe_for_test")) == ["pipeline.shard.cuts.CutTracker"]
    finally:
        probe.unlink()


def test_libraries_never_import_a_command_line():
    bad = [f"{'/'.join(parts)}.py" for f, parts in _modules()
           if ".".join(parts) not in CLIS and any(n in CLIS or n.rsplit(".", 1)[0] in CLIS for n in _imports(f))]
    assert not bad


def test_every_package_says_what_it_holds_and_no_module_is_huge():
    for f, _ in _modules():
        text = f.read_text()
        assert ast.get_docstring(ast.parse(text)), f"{f}: no module docstring"
        assert len(text.splitlines()) <= 420, f"{f}: {len(text.splitlines())} lines; split it by concept"
