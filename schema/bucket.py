"""Folders in an S3-compatible bucket, for every layer: the client (boto3, with its own request signing, retries and
the standard AWS credential chain), one mapping of its failures to messages that say what to check (never a
credential), the rules for s3:// addresses, and a folder copied up or down: an export written to a bucket
(`skinflow export --out s3://...`) and read back by the trainer, which never opens the workbench.

The endpoint comes from the standard AWS_ENDPOINT_URL (none: AWS itself).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from schema.errors import SkinflowError
from schema.files import write_atomic

S3_SCHEME = "s3://"
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")  # S3's rules for a bucket name (no IP-like, no "..")
TRANSFERS = 16  # objects in flight: what hides a bucket's latency, bounded so a server is not flooded
MANIFEST = "manifest.json"


class StoreUnavailable(SkinflowError):
    """The image store cannot be reached or refuses us: the message names the store and what to check."""


def s3_client():
    """A boto3 S3 client: endpoint (AWS_ENDPOINT_URL) and credentials from the standard AWS chain."""
    import boto3
    from botocore.config import Config

    # adaptive retries ride out a busy or briefly unreachable server; a dead one fails within seconds
    config = Config(
        retries={"max_attempts": 4, "mode": "adaptive"},
        connect_timeout=5,
        read_timeout=60,
        max_pool_connections=2 * TRANSFERS,
        signature_version="s3v4",  # SigV4 everywhere: presigned links too (boto3 may pick the retired SigV2 for them)
    )
    return boto3.session.Session().client("s3", config=config)


def s3_call(fn, bucket: str, endpoint: str, named: str, what: str, **kwargs):
    """`fn(Bucket=bucket, **kwargs)`, its failures as StoreUnavailable saying what to check (never a credential); a
    missing object's ClientError passes through for the caller to read as "missing"."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        return fn(Bucket=bucket, **kwargs)
    except ClientError as e:
        code = str(e.response.get("Error", {}).get("Code", ""))
        if code in ("NoSuchKey", "404", "NotFound"):
            raise
        if code == "NoSuchBucket":
            message = (
                f"the bucket {bucket!r} does not exist at {endpoint}: create it (e.g. `aws s3 mb s3://{bucket}`) or fix the URL"
            )
        elif code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "403", "InvalidToken", "ExpiredToken"):
            message = (
                f"{named} refused to let us {what} it ({code}): check the credentials (AWS_ACCESS_KEY_ID / "
                "AWS_SECRET_ACCESS_KEY, AWS_PROFILE or the instance role) and the bucket's policy"
            )
        else:
            message = f"{named} answered {code or 'an error'} when asked to {what} it"
        raise StoreUnavailable(message) from None
    except BotoCoreError as e:  # no route, refused connection, timeouts after the retries, no credentials
        raise StoreUnavailable(
            f"cannot {what} {named}: {type(e).__name__}; check AWS_ENDPOINT_URL ({endpoint}), that the server is up and "
            "reachable from here, and the credentials (AWS_ACCESS_KEY_ID or AWS_PROFILE)"
        ) from None


def is_bucket_name(name: str) -> bool:
    """S3's rules for a bucket name: 3-63 lowercase letters, digits, '.' or '-', no '..'."""
    return _BUCKET.fullmatch(name) is not None and ".." not in name


def split_address(url: str) -> tuple[str, str] | None:
    """(bucket, key or prefix) of an s3:// address, None when it is not one we read: the bucket must follow S3's
    naming rules, and the key (any text S3 allows) must hold no control characters and fit S3's 1,024 bytes."""
    url = url.strip()
    bucket, _, key = url.removeprefix(S3_SCHEME).partition("/")
    if not url.startswith(S3_SCHEME) or not is_bucket_name(bucket):
        return None
    if any(ord(c) < 32 or ord(c) == 127 for c in key) or len(key.encode()) > 1024:
        return None
    return bucket, key


def endpoint_name() -> str:
    return os.environ.get("AWS_ENDPOINT_URL") or "AWS S3"


def folder_address(url: str) -> tuple[str, str]:
    """(bucket, prefix) of an s3://bucket/prefix folder that exports are written to; StoreUnavailable otherwise."""
    split = split_address(url)
    if split is None or not split[1].strip("/") or any(p in (".", "..") for p in split[1].split("/")):
        raise StoreUnavailable(
            f"{url[:100]!r} is not an s3://bucket/folder address (a bucket name is 3-63 lowercase letters, digits, '.' "
            "or '-', then a folder, e.g. s3://derm-exports/v1)"
        )
    return split[0], split[1].strip("/")


def _keys(client, bucket: str, prefix: str) -> list[str]:
    paginator = client.get_paginator("list_objects_v2")
    pages = s3_call(
        lambda **kw: list(paginator.paginate(**kw)), bucket, endpoint_name(), f"s3://{bucket}", "list", Prefix=f"{prefix}/"
    )
    return [item["Key"] for page in pages for item in page.get("Contents", [])]


def check_folder_free(url: str, *, replace: bool = False) -> set[str]:
    """The keys under s3://bucket/prefix; StoreUnavailable when there are some and they may not be replaced."""
    bucket, prefix = folder_address(url)
    before = set(_keys(s3_client(), bucket, prefix))
    if before and not replace:
        raise StoreUnavailable(
            f"{url} holds {len(before)} objects already: exports are versioned, so pick a new folder (e.g. .../v2) "
            "or replace it (--overwrite)"
        )
    return before


def upload_folder(local: Path, url: str, *, replace: bool = False) -> int:
    """Copy a finished folder to s3://bucket/prefix, TRANSFERS at a time, the manifest last, so a reader that finds
    the manifest finds every file it names. A folder that holds objects already is refused unless `replace`
    (then what the new folder lacks is deleted once it is written). Returns the number of files."""
    bucket, prefix = folder_address(url)
    client, endpoint, named = s3_client(), endpoint_name(), f"s3://{bucket}/{prefix}"
    before = check_folder_free(url, replace=replace)
    files = sorted(p for p in Path(local).rglob("*") if p.is_file())
    names = {p: p.relative_to(local).as_posix() for p in files}

    def put(path: Path) -> None:
        s3_call(client.put_object, bucket, endpoint, named, "write to", Key=f"{prefix}/{names[path]}", Body=path.read_bytes())

    last = [p for p in files if names[p] == MANIFEST]
    with ThreadPoolExecutor(max_workers=TRANSFERS) as pool:
        list(pool.map(put, [p for p in files if p not in last]))
    for path in last:
        put(path)
    for stale in sorted(before - {f"{prefix}/{n}" for n in names.values()}):
        s3_call(client.delete_object, bucket, endpoint, named, "delete from", Key=stale)
    return len(files)


def download_folder(url: str, into: Path) -> Path:
    """A local copy of the export at s3://bucket/prefix under `into`/<bucket>/<prefix>, every file checked against
    the manifest's sha256 as it arrives. A file already there is kept when it still matches the manifest and the
    object's ETag is the one it was downloaded with (a copy cut off midway resumes; an object changed in the bucket
    since is downloaded again, and found out). StoreUnavailable when it is not an export or a file does not match."""
    bucket, prefix = folder_address(url)
    client, endpoint, named = s3_client(), endpoint_name(), f"s3://{bucket}/{prefix}"
    local = Path(into) / bucket / prefix
    etag_file = local.parent / f".{local.name}.etags.json"

    def get(name: str) -> tuple[bytes, str]:
        from botocore.exceptions import ClientError

        try:
            reply = s3_call(client.get_object, bucket, endpoint, named, "read from", Key=f"{prefix}/{name}")
        except ClientError:
            raise StoreUnavailable(f"{url} has no {name}: is it a SkinFlow export folder?") from None
        return reply["Body"].read(), str(reply.get("ETag", ""))

    manifest_bytes, _ = get(MANIFEST)
    try:
        files = json.loads(manifest_bytes)["files"]
        assert isinstance(files, dict)
    except (ValueError, KeyError, TypeError, AssertionError):
        raise StoreUnavailable(f"{url} has no readable {MANIFEST}: is it a SkinFlow export folder?") from None
    for name in files:
        if split_address(f"s3://{bucket}/{name}") is None or any(p in ("", ".", "..") for p in str(name).split("/")):
            raise StoreUnavailable(f"{url}: the manifest names {str(name)[:80]!r}, which is not a file inside the folder")
    paginator = client.get_paginator("list_objects_v2")
    pages = s3_call(lambda **kw: list(paginator.paginate(**kw)), bucket, endpoint, named, "list", Prefix=f"{prefix}/")
    listed = {item["Key"][len(prefix) + 1 :]: str(item.get("ETag", "")) for page in pages for item in page.get("Contents", [])}
    try:
        known = json.loads(etag_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        known = {}

    def fetch(item: tuple[str, str]) -> tuple[str, str | None]:
        name, digest = item
        target = local / name
        if listed.get(name) and known.get(name) == listed[name] and target.is_file():
            if hashlib.sha256(target.read_bytes()).hexdigest() == digest:
                return name, None
        data, etag = get(name)
        if hashlib.sha256(data).hexdigest() != digest:
            return name, "changed"
        write_atomic(target, data)
        return name, etag

    with ThreadPoolExecutor(max_workers=TRANSFERS) as pool:
        fetched = list(pool.map(fetch, files.items()))
    changed = [name for name, etag in fetched if etag == "changed"]
    known = {name: (etag or known.get(name, "")) for name, etag in fetched if etag != "changed"}
    write_atomic(etag_file, json.dumps(known, sort_keys=True).encode())
    if changed:
        raise StoreUnavailable(
            f"{url}: {len(changed)} file(s) differ from the manifest (e.g. {changed[0]}): the export was changed after "
            "it was written; export again"
        )
    write_atomic(local / MANIFEST, manifest_bytes)
    return local
