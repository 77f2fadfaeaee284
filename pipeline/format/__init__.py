"""The on-disk format of a shard folder shared by its writer and its readers (docs/FORMAT.md)."""

from pipeline.format.tario import ShardWriter, index_path, read_index, read_range

__all__ = ["ShardWriter", "index_path", "read_index", "read_range"]
