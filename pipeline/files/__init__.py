"""File-system primitives every stage uses: atomic writes, folder locks, writable output folders, file checksums,
the cache folder."""

from pipeline.files.atomic import atomic_open, save_image_atomic, write_json_atomic, write_text_atomic
from pipeline.files.cache import cache_root
from pipeline.files.digest import sha256_file
from pipeline.files.lock import FolderLock
from pipeline.files.outdir import check_file_writable, check_writable, claimed_output, claims_output, remove_empty

__all__ = ["cache_root", "sha256_file", "atomic_open", "save_image_atomic", "write_json_atomic", "write_text_atomic",
           "FolderLock",
           "check_writable", "check_file_writable", "claimed_output", "claims_output",
           "remove_empty"]
