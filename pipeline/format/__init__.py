"""The on-disk format of a shard folder shared by its writer and its readers (docs/FORMAT.md)."""

from pipeline.format.folder import FORMAT_VERSION, ShardFolder, WorkVideo, describe_unfinished
from pipeline.format.manifest import expected_files, file_entry
from pipeline.format.tables import TABLE_FIELDS, FrameTable
from pipeline.format.tario import ShardWriter, index_path, read_index, read_range

__all__ = [
    "FORMAT_VERSION", "ShardFolder", "TABLE_FIELDS", "FrameTable", "ShardWriter", "index_path", "read_index",
    "read_range", "WorkVideo", "describe_unfinished", "expected_files", "file_entry",
]
