"""Shard folders on object storage: fsspec URLs, uploads with commit points, and a verified local cache."""

from pipeline.files import cache_root
from pipeline.store.params import PathOrURL
from pipeline.store.remote import RemoteFolder, StorageError, is_url, redact, storage_errors
from pipeline.store.stage import cache_path, default_cache_dir, stage, stages_shards
from pipeline.store.upload import MirroredFolder, default_work_dir, local_for

__all__ = ["PathOrURL", "RemoteFolder", "StorageError", "cache_root", "is_url", "redact", "storage_errors",
           "MirroredFolder", "default_work_dir", "local_for", "cache_path", "default_cache_dir",
           "stage", "stages_shards"]
