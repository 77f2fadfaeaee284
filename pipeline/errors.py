"""The exception types that reach the user as a single line, one per kind of failure.

  InputError        bad input or environment (a file, an option, a folder): fix it and rerun
  DiskFullError     a write failed for lack of space: free space and rerun (runs resume)
  TrainingDiverged  training stopped: a non-finite loss, or too many unreadable clips

The command lines turn each into `error: ...` on stderr and exit status 2 (`pipeline/cli_errors.py`), and
so too an OSError from a full disk, a read-only or forbidden path, or memory running out anywhere in a
command (`os_error_line`): one mechanism for every command, not one patch per command.
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
    return _cause(exc, DISK_FULL_ERRNOS)


NOT_WRITABLE_ERRNOS = {errno.EROFS, errno.EACCES, errno.EPERM}


def _cause(exc: BaseException | None, errnos: set[int]) -> OSError | None:
    """The first OSError with one of `errnos` in `exc`'s cause/context chain, if any."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in errnos:
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


def os_error_line(exc: BaseException) -> str | None:
    """The one line for an environment failure behind `exc` (disk full, read-only or forbidden path, out of
    memory), or None when `exc` is something else (a bug: it keeps its traceback)."""
    if (isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError"  # torch's, for CUDA
            or "DefaultCPUAllocator: can't allocate memory" in str(exc)):
        return ("out of memory: this run needs more RAM than this machine (or its memory limit) gives; use a smaller "
                "batch (train.batch_size=, --batch-size) or model, or a machine with more memory")
    full = disk_full_cause(exc)
    if full is not None:
        where = full.filename or "the output folder"
        return (f"{where}: disk full ({full.strerror}); nothing half-written is left under a final name: free "
                "space, then run the same command again")
    denied = _cause(exc, NOT_WRITABLE_ERRNOS)
    if denied is not None:
        where = denied.filename or "a file"
        return f"{where}: {denied.strerror}; check its permissions (an output: make it writable, or choose another)"
    return None
