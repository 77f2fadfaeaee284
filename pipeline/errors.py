"""The one exception type that reaches the user as a single line."""

from __future__ import annotations

import errno
import sys
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class InputError(Exception):
    """A problem with the user's input or environment: printed as one line, exit status 2.

    The message names the file, what is wrong with it and what to do.
    """


class DiskFullError(InputError):
    """A write failed because the disk (or quota, or file size limit) is full: one line, exit status 2."""


DISK_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


def disk_full_cause(exc: BaseException) -> OSError | None:
    """The disk-full OSError behind `exc` (itself, or its cause/context chain: torch's zip writer reports
    a failed write as `RuntimeError: ... unexpected pos`, with the OSError as context), if any."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in DISK_FULL_ERRNOS:
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


def report_errors(fn: Callable[[], T], interrupted: str = "run the same command again to resume") -> T:
    """Run fn; an InputError becomes `error: ...` on stderr and exit 2, Ctrl-C a hint and exit 130."""
    try:
        return fn()
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print(f"interrupted: {interrupted}", file=sys.stderr)
        sys.exit(130)
