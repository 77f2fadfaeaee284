"""File-system primitives every stage uses: atomic writes, folder locks, writable output folders."""

from pipeline.files.atomic import atomic_open, write_json_atomic, write_text_atomic
from pipeline.files.lock import FolderLock
from pipeline.files.outdir import check_writable

__all__ = ["atomic_open", "write_json_atomic", "write_text_atomic", "FolderLock", "check_writable"]
