"""A shard folder on object storage (any fsspec URL: s3://, gs://, ...), seen as paths relative to its root.

Credentials come from fsspec's and boto's own configuration (environment, ~/.aws, instance roles,
AWS_ENDPOINT_URL for S3-compatible stores); nothing here reads, prints or writes them. Every storage
failure (no bucket, wrong credentials, no backend installed, unreachable endpoint) becomes one
InputError line that names the URL without any user:password part.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from pipeline.errors import InputError

BACKENDS = {"s3": "s3fs", "s3a": "s3fs", "gs": "gcsfs", "gcs": "gcsfs", "az": "adlfs", "abfs": "adlfs"}
CHUNK = 8 << 20


def is_url(path: str | Path) -> bool:
    """True for an fsspec URL other than a local file (`s3://b/p`, `gs://b/p`); False for plain paths."""
    m = re.match(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://", str(path))
    return bool(m) and m.group(1).lower() != "file"


def redact(text: str) -> str:
    """`text` with every URL's `user:password@` part and query string (signatures, tokens) taken out."""
    text = re.sub(r"([a-zA-Z][a-zA-Z0-9+.-]*://)[^/@\s]*@", r"\1", str(text))
    return re.sub(r"([a-zA-Z][a-zA-Z0-9+.-]*://[^\s?#]*)[?#][^\s]*", r"\1", text)


class StorageError(InputError):
    """Object storage failed (refused, unreachable, no bucket): one line; it stops a run, never skips a video."""


def _reason(e: BaseException) -> str:
    """What went wrong, from the storage library's exception, in a few words."""
    name = type(e).__name__
    text = redact(str(e).splitlines()[0]) if str(e) else name
    if name in ("NoCredentialsError", "PartialCredentialsError"):
        return ("no credentials found (set AWS_PROFILE or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, "
                "or ~/.aws/credentials)")
    if isinstance(e, PermissionError) or "AccessDenied" in name or "Forbidden" in text:
        return (f"access denied ({text}); check the credentials fsspec/boto find (AWS_PROFILE, AWS_ACCESS_KEY_ID, "
                "~/.aws/credentials) and that they may read and write this bucket")
    if "bucket does not exist" in text or "NoSuchBucket" in text:
        return "the bucket does not exist; create it or fix the URL"
    if "Could not connect" in text or "Connect" in name or "EndpointConnection" in name:
        return f"cannot reach the storage endpoint ({text}); check the network and AWS_ENDPOINT_URL"
    return text


@contextmanager
def storage_errors(url: str, doing: str) -> Iterator[None]:
    """Turn a storage failure while `doing` something with `url` into one InputError line."""
    try:
        yield
    except InputError:
        raise
    except (OSError, ValueError, RuntimeError) as e:
        raise StorageError(f"{redact(url)}: {doing} failed: {_reason(e)}") from None
    except Exception as e:  # botocore/aiohttp errors do not share a base class with OSError
        if type(e).__module__.split(".")[0] in ("botocore", "aiobotocore", "aiohttp", "s3fs", "gcsfs", "google"):
            raise StorageError(f"{redact(url)}: {doing} failed: {_reason(e)}") from None
        raise


class RemoteFolder:
    """The folder at an fsspec URL; `rel` paths use `/` and are relative to it."""

    def __init__(self, url: str):
        self.url = str(url).rstrip("/")
        import fsspec

        scheme = self.url.split("://", 1)[0].lower()
        try:
            self.fs, self.root = fsspec.core.url_to_fs(self.url)
        except (ImportError, ValueError) as e:
            pkg = BACKENDS.get(scheme)
            hint = f"pip install {pkg}" if pkg else "install the fsspec backend for this scheme"
            raise InputError(f"{redact(self.url)}: cannot open {scheme}:// URLs here ({e}); {hint}") from None
        self.root = self.root.rstrip("/")

    def __str__(self) -> str:
        return redact(self.url)

    def path(self, rel: str) -> str:
        return f"{self.root}/{rel}" if rel else self.root

    def check(self, write: bool) -> None:
        """Fail in one line now, before any work, when the folder cannot be listed (or written: a probe file)."""
        with storage_errors(self.url, "opening it for writing" if write else "opening it"):
            bucket = self.root.split("/", 1)[0]
            self.fs.invalidate_cache()
            try:  # the bucket's own check: a missing bucket and refused credentials differ here
                self.fs.info(bucket)
            except FileNotFoundError:
                raise FileNotFoundError("The specified bucket does not exist") from None
            except PermissionError:  # roles scoped to a prefix may not see the bucket itself: the probe decides
                pass
            if not write:
                with suppress(FileNotFoundError):  # an empty prefix is fine here; refused credentials are not
                    self.fs.ls(self.root)
            else:
                probe = self.path(f".probe-{os.getpid()}")
                self.fs.pipe_file(probe, b"")
                self.fs.rm_file(probe)

    def listing(self, prefix: str = "") -> dict[str, int]:
        """rel path -> size of every object under `prefix` (all of them when empty)."""
        with storage_errors(self.url, "listing"):
            self.fs.invalidate_cache()
            found = self.fs.find(self.path(prefix), detail=True)
        n = len(self.root) + 1
        return {p[n:]: int(info.get("size") or 0) for p, info in found.items() if info.get("type") != "directory"}

    def read(self, rel: str) -> bytes | None:
        """An object's bytes, None when it does not exist."""
        with storage_errors(self.url, f"reading {rel}"):
            try:
                return self.fs.cat_file(self.path(rel))
            except FileNotFoundError:
                return None

    def write(self, rel: str, data: bytes) -> None:
        with storage_errors(self.url, f"writing {rel}"):
            self.fs.pipe_file(self.path(rel), data)

    def upload(self, local: Path, rel: str) -> None:
        """Copy a local file to `rel` (an object store publishes it whole, or not at all)."""
        with storage_errors(self.url, f"uploading {rel}"):
            self.fs.put_file(str(local), self.path(rel))

    def download(self, rel: str, local: Path, on_bytes: Callable[[int], None] = lambda n: None,
                 resume: bool = False) -> None:
        """Copy `rel` to `local`, through `local`.part (continued from its size when `resume`), renamed when whole."""
        part = local.with_name(local.name + ".part")
        local.parent.mkdir(parents=True, exist_ok=True)
        have = part.stat().st_size if resume and part.exists() else 0
        with storage_errors(self.url, f"downloading {rel}"), self.fs.open(self.path(rel), "rb") as src, \
                open(part, "ab" if have else "wb") as dst:
            if have:
                src.seek(have)
            while chunk := src.read(CHUNK):
                dst.write(chunk)
                on_bytes(len(chunk))
            dst.flush()
            os.fsync(dst.fileno())
        os.replace(part, local)

    def remove(self, rel: str) -> None:
        """Delete `rel` and everything under it; nothing there is fine."""
        with storage_errors(self.url, f"deleting {rel}"), suppress(FileNotFoundError):
            self.fs.rm(self.path(rel), recursive=True)
