"""The one exception type that reaches the user as a single line."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class InputError(Exception):
    """A problem with the user's input or environment: printed as one line, exit status 2.

    The message names the file, what is wrong with it and what to do.
    """


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
