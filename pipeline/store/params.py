"""The click type of a folder argument that may be an fsspec URL (click.Path would fold `s3://` into `s3:/`)."""

from __future__ import annotations

from pathlib import Path

import click

from pipeline.store.remote import is_url


class PathOrURL(click.ParamType):
    """A local folder (a Path) or an object-storage URL such as s3://bucket/prefix (kept as a str)."""

    name = "DIR|URL"

    def convert(self, value, param, ctx):
        if isinstance(value, Path) or not is_url(str(value)):
            return Path(value)
        return str(value).rstrip("/")
