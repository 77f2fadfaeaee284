"""`dora-data fetch`: the video catalog and verified, resumable downloads with yt-dlp."""

from pipeline.fetch.catalog import BUILTIN, read_catalog, select
from pipeline.fetch.download import FetchOptions, fetch, status

__all__ = ["BUILTIN", "read_catalog", "select", "FetchOptions", "fetch", "status"]
