"""Where the pictures are: the content-addressed image store (`<sha[:2]>/<sha>.<ext>`, curation/store/files.py names
them), in a folder under the workbench (the default) or in an S3-compatible bucket (MinIO, Ceph, SeaweedFS, AWS S3).

A bucket is named by `image_store = "s3://bucket/prefix"` (SKINFLOW_IMAGE_STORE); the endpoint comes from the
standard AWS_ENDPOINT_URL (none: AWS itself) and the credentials from the standard AWS chain (environment, profile,
instance role), read by boto3 and never written anywhere by the workbench: not in logs, the audit trail, backups,
exports, data cards or error messages (`describe` names the bucket and the endpoint only).

Readers ask for `local_path(key)`: the file itself for a folder; for a bucket, a copy downloaded once into
<home>/cache/images/ (the key is the picture's sha256, so a cached copy is never stale, and two app servers can
share nothing but the bucket). A picture deleted behind the workbench's back is ImageMissing, with its key.
The S3 client, its error mapping and address rules are schema/bucket.py's, shared with exports and the trainer.
"""

from __future__ import annotations

import os
import re
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from curation.errors import ConfigError
from schema.bucket import S3_SCHEME, StoreUnavailable, endpoint_name, is_bucket_name, s3_call, s3_client
from schema.errors import SkinflowError
from schema.files import write_atomic

_PREFIX_PART = re.compile(r"[A-Za-z0-9._-]+")
_KEY = re.compile(r"[0-9a-f]{2}/[0-9a-f]{64}\.[a-z]{3,4}")  # what the workbench stores: <sha[:2]>/<sha>.<ext>
_SAFE_KEY = re.compile(r"[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*")  # a relative path of plain names: all a key may be


class ImageMissing(SkinflowError):
    """A picture the database names is not in the store (deleted behind the workbench's back, or never copied)."""

    def __init__(self, key: str, store: str):
        super().__init__(f"image {key} is missing from the image store ({store}); `skinflow images verify` lists all")
        self.key = key


@dataclass(frozen=True)
class StoredObject:
    key: str
    size: int
    modified: datetime  # when it was written (the grace period of an unreferenced object counts from here)


class ImageStore(ABC):
    """The store's operations, by key (`<sha[:2]>/<sha>.<ext>`)."""

    @abstractmethod
    def describe(self) -> str:
        """Where the store is, for messages and the status page (never a credential)."""

    @abstractmethod
    def put(self, key: str, data: bytes) -> None:
        """Write a picture (atomically: a reader never sees half of it)."""

    @abstractmethod
    def get(self, key: str) -> bytes:
        """A picture's bytes; ImageMissing when it is not there."""

    @abstractmethod
    def size(self, key: str) -> int | None:
        """The picture's length in bytes, None when it is not there."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove a picture (nothing when it is not there)."""

    @abstractmethod
    def objects(self) -> Iterator[StoredObject]:
        """Every picture in the store (keys of the workbench's form only)."""

    @abstractmethod
    def local_path(self, key: str) -> Path:
        """A local file holding the picture, for code that opens files (a bucket's picture is downloaded once into
        the cache; ImageMissing when it is not in the bucket)."""

    def exists(self, key: str) -> bool:
        return self.size(key) is not None

    def presigned_url(self, key: str, expires_s: int) -> str:
        """A URL anyone holding it can read the picture from until it expires (a bucket's only)."""
        raise StoreUnavailable(f"{self.describe()} hands out no links: only a bucket store signs URLs")

    @abstractmethod
    def prefetch(self, keys: list[str]) -> None:
        """Start making these pictures local in the background."""


class FolderImageStore(ImageStore):
    """The default: a folder (<home>/images), one sub-folder per first two hex digits."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def describe(self) -> str:
        return f"folder {self.root}"

    def put(self, key: str, data: bytes) -> None:
        target = self.root / _checked(key)
        if target.exists():
            os.utime(target)  # written again: its grace period before garbage collection starts over
        else:
            write_atomic(target, data)

    def get(self, key: str) -> bytes:
        try:
            return (self.root / _checked(key)).read_bytes()
        except FileNotFoundError:
            raise ImageMissing(key, self.describe()) from None

    def size(self, key: str) -> int | None:
        try:
            return (self.root / _checked(key)).stat().st_size
        except FileNotFoundError:
            return None

    def delete(self, key: str) -> None:
        (self.root / _checked(key)).unlink(missing_ok=True)

    def objects(self) -> Iterator[StoredObject]:
        if not self.root.is_dir():
            return
        for path in sorted(self.root.glob("*/*")):
            key = path.relative_to(self.root).as_posix()
            if _KEY.fullmatch(key) and path.is_file():
                stat = path.stat()
                yield StoredObject(key, stat.st_size, datetime.fromtimestamp(stat.st_mtime, UTC))

    def local_path(self, key: str) -> Path:
        return self.root / _checked(key)  # the file itself, there or not: callers that care ask `exists`

    def prefetch(self, keys: list[str]) -> None:
        """Nothing to do: a folder's pictures are local already."""


class BucketImageStore(ImageStore):
    """An S3-compatible bucket, through boto3 (its own request signing, retries and credential chain)."""

    def __init__(self, bucket: str, prefix: str, cache_dir: Path, *, client: Any = None, endpoint: str | None = None):
        self.bucket, self.prefix, self.cache_dir = bucket, prefix, Path(cache_dir)
        self.endpoint = endpoint or endpoint_name()
        self._client = client
        self._lock = threading.Lock()
        self._prefetcher: ThreadPoolExecutor | None = None
        self._fetching: set[str] = set()

    @property
    def client(self):
        if self._client is None:
            self._client = s3_client()
        return self._client

    def describe(self) -> str:
        return f"bucket s3://{self.bucket}/{self.prefix} at {self.endpoint}"

    def _name(self, key: str) -> str:
        return f"{self.prefix}/{_checked(key)}" if self.prefix else _checked(key)

    def _call(self, what: str, fn, **kwargs):
        return s3_call(fn, self.bucket, self.endpoint, f"the image store ({self.describe()})", what, **kwargs)

    def put(self, key: str, data: bytes) -> None:
        self._call("write to", self.client.put_object, Key=self._name(key), Body=data)

    def get(self, key: str) -> bytes:
        from botocore.exceptions import ClientError

        try:
            return self._call("read from", self.client.get_object, Key=self._name(key))["Body"].read()
        except ClientError:
            raise ImageMissing(key, self.describe()) from None

    def size(self, key: str) -> int | None:
        from botocore.exceptions import ClientError

        try:
            return int(self._call("read from", self.client.head_object, Key=self._name(key))["ContentLength"])
        except ClientError:
            return None

    def delete(self, key: str) -> None:
        self._call("delete from", self.client.delete_object, Key=self._name(key))

    def objects(self) -> Iterator[StoredObject]:
        start = f"{self.prefix}/" if self.prefix else ""
        paginator = self.client.get_paginator("list_objects_v2")
        pages = self._call("list", lambda **kw: list(paginator.paginate(**kw)), Prefix=start)
        for page in pages:
            for item in page.get("Contents", []):
                key = item["Key"][len(start) :]
                if _KEY.fullmatch(key):
                    yield StoredObject(key, int(item["Size"]), item["LastModified"])

    def local_path(self, key: str) -> Path:
        cached = self.cache_dir / _checked(key)
        if not cached.is_file():
            write_atomic(cached, self.get(key))  # content-addressed: a copy, once made, is never stale
        return cached

    def presigned_url(self, key: str, expires_s: int) -> str:
        # signed here with the credentials in use (no request is made): the URL carries a signature, never the secret
        return self.client.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": self._name(key)}, ExpiresIn=expires_s
        )

    def prefetch(self, keys: list[str]) -> None:
        with self._lock:
            if self._prefetcher is None:  # two threads: the next picture and one more, never a flood
                self._prefetcher = ThreadPoolExecutor(max_workers=2, thread_name_prefix="prefetch")
            for key in keys:
                if key not in self._fetching and not (self.cache_dir / _checked(key)).is_file():
                    self._fetching.add(key)
                    self._prefetcher.submit(self._warm, key)

    def _warm(self, key: str) -> None:
        try:
            self.local_path(key)
        except (ImageMissing, StoreUnavailable):
            pass  # said when the picture is opened: the page shows it missing, or the store's error
        finally:
            with self._lock:
                self._fetching.discard(key)


def _checked(key: str) -> str:
    """A key is a relative path of plain names (the workbench writes `<sha[:2]>/<sha>.<ext>`): anything that could
    climb out of the folder or the prefix is refused before it reaches a path or a request."""
    if not _SAFE_KEY.fullmatch(key) or any(part in (".", "..") for part in key.split("/")):
        raise ValueError(f"not an image store key: {key[:80]!r}")
    return key


def parse_store_url(url: str) -> tuple[str, str]:
    """(bucket, prefix) of `s3://bucket/prefix`; ConfigError saying what a valid one looks like otherwise."""
    rest = url.strip().removeprefix(S3_SCHEME)
    bucket, _, prefix = rest.partition("/")
    prefix = prefix.strip("/")
    parts = prefix.split("/") if prefix else []
    if (
        not url.strip().startswith(S3_SCHEME)
        or not is_bucket_name(bucket)
        or any(not _PREFIX_PART.fullmatch(p) or p in (".", "..") for p in parts)
        or len(prefix) > 512
    ):
        raise ConfigError(
            f"image store {url[:100]!r} is not an s3://bucket/prefix URL: a bucket name is 3-63 lowercase letters, "
            "digits, '.' or '-'; the prefix is folders of letters, digits, '.', '_' or '-' (e.g. "
            "s3://derm-images/workbench). Set SKINFLOW_IMAGE_STORE, or leave it out to keep the images under the home"
        )
    return bucket, prefix


def open_image_store(image_store: str | None, folder: Path, cache_dir: Path) -> ImageStore:
    """The store the settings name: a bucket for an s3:// URL, else the folder."""
    if not image_store:
        return FolderImageStore(folder)
    bucket, prefix = parse_store_url(image_store)
    return BucketImageStore(bucket, prefix, cache_dir)
