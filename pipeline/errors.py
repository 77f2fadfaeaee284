"""The exception types that reach the user as a single line, one per kind of failure.

  InputError        bad input or environment (a file, an option, a folder): fix it and rerun
  DiskFullError     a write failed for lack of space: free space and rerun (runs resume)
  TrainingDiverged  training stopped: a non-finite loss, or too many unreadable clips

The command lines turn each into `error: ...` on stderr and exit status 2 (`pipeline/cli_errors.py`).
"""

from __future__ import annotations

import errno


class UserFacingError(Exception):
    """An error a command line prints as one line (its message names what, where, and what to do)."""


class InputError(UserFacingError):
    """A problem with the user's input or environment. The message names the file, what is wrong with
    it and what to do."""


class DiskFullError(UserFacingError):
    """A write failed because the disk (or quota, or file size limit) is full."""


class TrainingDiverged(UserFacingError):
    """Training cannot go on: the loss is not finite, or too many clips were unreadable."""


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
