"""Output folders and files: proven writable, and claimed with the folder lock, before any work starts.

Every command that writes calls one of these first, so a read-only folder, a regular file in the way
or a second run on the same folder is one line (exit 2) before minutes of work, not a traceback after.
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Callable, Iterator
from pathlib import Path

from pipeline.errors import InputError
from pipeline.files.lock import FolderLock


def _in_the_way(folder: Path) -> Path | None:
    """The regular file among `folder` and its parents, if one blocks making `folder`."""
    for d in (folder, *folder.parents):
        if d.exists():
            return d if not d.is_dir() else None
    return None


def check_writable(out: Path, option: str = "--out") -> list[Path]:
    """Create `out` if needed and prove a file can be written there; the folders it made, innermost first."""
    out = Path(out)
    blocker = _in_the_way(out)
    if blocker == out:
        raise InputError(f"{out}: cannot write the output folder, it is a file; choose another {option}")
    if blocker is not None:
        raise InputError(f"{out}: cannot write the output folder, {blocker} is a file; choose another {option}")
    made = [d for d in (out, *out.parents) if not d.exists()]
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe_file = out / f".write-test-{os.getpid()}"
        probe_file.write_bytes(b"")
        probe_file.unlink()
    except OSError as e:
        remove_empty(made)
        raise InputError(f"{out}: cannot write the output folder ({e.strerror}); choose a writable {option}") from None
    return made


def check_file_writable(path: Path, option: str) -> list[Path]:
    """A file output (`path`): its folder exists or can be made, and is writable; `path` is not a folder.
    Returns the folders it made, innermost first."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{path}: is a folder; {option} takes a file name")
    return check_writable(path.parent, option)


def remove_empty(folders: list[Path]) -> None:
    """Remove these folders (innermost first) while they are empty."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            break


@contextlib.contextmanager
def claimed_output(out: Path, what: str, option: str = "--out") -> Iterator[Path]:
    """`with claimed_output(out, "dora-eval knn"):` the folder is writable and locked (pipeline/files/lock.py)
    for the whole block; folders it made and left empty are removed at the end."""
    made = check_writable(out, option)
    try:
        with FolderLock(out, what, hint=f"another {option}"):
            yield Path(out)
    finally:
        remove_empty(made)


def claims_output(param: str | None = "out", dirs: tuple[str, ...] = (), files: tuple[str, ...] = ()) -> Callable:
    """Decorator for a click command: before its body runs, the folder in option `param` is made writable
    and locked for the whole command (`claimed_output`), the folders in `dirs` are proven writable and
    the files in `files` writable (`check_file_writable`). A None value is skipped."""

    def option(name: str) -> str:
        return "--" + name.replace("_", "-")

    def wrap(command: Callable) -> Callable:
        @functools.wraps(command)
        def run(*args, **kwargs):
            import click

            ctx = click.get_current_context(silent=True)
            what = ctx.command_path if ctx is not None else command.__name__
            made = [d for name in files if kwargs.get(name) is not None
                    for d in check_file_writable(kwargs[name], option(name) if name != "out" else "OUT")]
            made += [d for name in dirs if kwargs.get(name) is not None
                     for d in check_writable(kwargs[name], option(name))]
            try:
                if param is None or kwargs.get(param) is None:
                    return command(*args, **kwargs)
                with claimed_output(kwargs[param], what, option(param)):
                    return command(*args, **kwargs)
            finally:
                remove_empty(made)

        return run

    return wrap
