"""Import a folder of images from an S3-compatible bucket: `skinflow import s3://bucket/prefix/`.

Every object under the prefix is a candidate, as every file under a local folder is; each gets the guards a local
file gets: the size cap checked from the object's listed length before a byte is downloaded, then the same
decoding limits, metadata stripping and sha256 dedupe (curation/ingest/common.py). Downloads run on a bounded pool
of threads, a batch at a time; a batch's rows are committed together, so a run cut off by a network fault keeps
its finished batches, and running it again skips every object already imported (by its s3:// address, without
downloading it) and goes on. The source objects are only read.
"""

from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import PurePosixPath

from sqlalchemy import select

from curation.errors import ImageRejected, IngestError
from curation.ingest.common import ImportReport, KnownContent, Prepared, Progress, add_prepared, flush_new, prepare, start_import
from curation.ingest.folder import skipped_name
from curation.store import audit
from curation.store.auth import Actor
from curation.store.db import Workbench
from curation.store.models import Image
from schema.bucket import endpoint_name, s3_call, s3_client, split_address

BUCKET_SOURCE = "bucket"
BUCKET_BATCH = 200
DOWNLOAD_THREADS = 16  # downloads in flight: what hides a bucket's latency, bounded so a server is not flooded


def parse_source_url(url: str) -> tuple[str, str]:
    """(bucket, prefix) of `s3://bucket/prefix/`; IngestError saying what a valid one looks like otherwise."""
    split = split_address(url)
    if split is None:
        raise IngestError(
            f"{url[:100]!r} is not an s3://bucket/prefix/ address (a bucket name is 3-63 lowercase letters, digits, '.' "
            "or '-'; the prefix holds no control characters and is at most 1,024 bytes); nothing was imported"
        )
    return split


class ObjectReader:
    """Reads source objects (never writes them) through one boto3 client; its failures say which bucket and
    endpoint, and what to check. Safe to call from several threads (boto3 clients are)."""

    def __init__(self, cap_bytes: int):
        self.client, self.endpoint, self.cap = s3_client(), endpoint_name(), cap_bytes

    def named(self, bucket: str) -> str:
        return f"the bucket s3://{bucket} at {self.endpoint}"

    def list(self, bucket: str, prefix: str) -> list[tuple[str, int]]:
        """(key, size) of every object under the prefix, folders' marker objects and hidden files left out."""
        paginator = self.client.get_paginator("list_objects_v2")
        pages = s3_call(
            lambda **kw: list(paginator.paginate(**kw)), bucket, self.endpoint, self.named(bucket), "list", Prefix=prefix
        )
        return [
            (item["Key"], int(item["Size"]))
            for page in pages
            for item in page.get("Contents", [])
            if not item["Key"].endswith("/") and not skipped_name(PurePosixPath(item["Key"]).name)
        ]

    def read(self, bucket: str, key: str) -> bytes:
        """An object's bytes. ImageRejected when it is not there or over the size cap: the length the server
        announces is checked before the body is read, so an oversized object is never downloaded.
        StoreUnavailable (the server down, the credentials refused) stops the import: nothing of the batch is kept."""
        from botocore.exceptions import ClientError

        try:
            reply = s3_call(self.client.get_object, bucket, self.endpoint, self.named(bucket), "read from", Key=key)
        except ClientError:
            raise ImageRejected("no such object in the bucket") from None
        body = reply["Body"]
        try:
            if int(reply.get("ContentLength") or 0) > self.cap:
                raise ImageRejected(f"{int(reply['ContentLength']) / 1e6:.1f} MB, over the {self.cap / 1e6:g} MB limit")
            data = body.read(self.cap + 1)
        finally:
            body.close()
        if len(data) > self.cap:  # a server that did not say its length
            raise ImageRejected(f"over the {self.cap / 1e6:g} MB limit")
        return data

    def read_many(self, addresses: list[str]) -> dict[str, bytes | ImageRejected]:
        """Each s3:// address's bytes or the reason it was refused, DOWNLOAD_THREADS downloads in flight."""

        def read_one(address: str) -> bytes | ImageRejected:
            bucket, key = split_address(address) or ("", "")
            try:
                return self.read(bucket, key)
            except ImageRejected as e:
                return e

        with ThreadPoolExecutor(max_workers=DOWNLOAD_THREADS) as pool:
            return dict(zip(addresses, pool.map(read_one, addresses), strict=True))


def import_bucket(
    wb: Workbench, actor: Actor, url: str, *, label_from_folder: bool = False, progress: Progress | None = None
) -> ImportReport:
    """Import every image under an s3:// prefix (recursive). With label_from_folder, each image's folder name below
    the prefix is its source label (ImageFolder layout: prefix/<label>/<image>)."""
    start_import(wb, actor, "import images")
    bucket, prefix = parse_source_url(url)
    cap = int(wb.settings.max_image_mb * 1e6)
    reader = ObjectReader(cap)
    listed = reader.list(bucket, prefix)
    report = ImportReport()
    with wb.session() as session:
        known = KnownContent(session)
        imported = set(session.scalars(select(Image.source_ref).where(Image.source == BUCKET_SOURCE)))
    todo = []
    for key, size in listed:
        address = f"s3://{bucket}/{key}"
        if address in imported:
            report.already_present += 1
        elif size > cap:  # refused from its listed length: never downloaded
            report.failed.append((address, f"{size / 1e6:.1f} MB, over the {wb.settings.max_image_mb:g} MB limit"))
        else:
            todo.append(key)

    def fetch(frozen: KnownContent, key: str) -> Prepared:
        address = f"s3://{bucket}/{key}"
        try:
            body = reader.read(bucket, key)
        except ImageRejected as e:  # gone or grown since it was listed
            return Prepared(address, ("failed", str(e)))
        return prepare(wb, frozen, address, body, hashlib.sha256(body).hexdigest())

    with ThreadPoolExecutor(max_workers=DOWNLOAD_THREADS) as pool:
        for start in range(0, len(todo), BUCKET_BATCH):
            batch = todo[start : start + BUCKET_BATCH]
            frozen = known.snapshot()
            prepared = list(pool.map(lambda key, frozen=frozen: fetch(frozen, key), batch))  # a fault fails the batch
            with wb.session() as session:
                new_rows: list[Image] = []
                for key, ready in zip(batch, prepared, strict=True):
                    folder = PurePosixPath(key[len(prefix) :].lstrip("/")).parent.name
                    label = folder if label_from_folder and folder else None
                    row = add_prepared(session, known, report, ready, lambda key=key, label=label: _row(wb, bucket, key, label))
                    if row is not None:
                        new_rows.append(row)
                        if label and row.diagnosis_key is None:
                            message = f"{ready.item}: folder label {label!r} is not in the taxonomy; kept as free text"
                            report.warn(message, "label kept as free text")
                new_ids = flush_new(session, report, new_rows)
                if new_ids:
                    audit.record(
                        session, actor, "images.import", "image", None, source=f"s3://{bucket}/{prefix}", image_ids=new_ids
                    )
            if progress:
                progress(min(start + BUCKET_BATCH, len(todo)), len(todo))
    if progress and not todo:
        progress(0, 0)
    return report


def _row(wb: Workbench, bucket: str, key: str, label: str | None) -> Image:
    return Image(
        source=BUCKET_SOURCE,
        source_ref=f"s3://{bucket}/{key}",
        status="pending",
        source_label=label,
        diagnosis_key=wb.taxonomy.normalise(label) if label else None,
        meta={"filename": PurePosixPath(key).name},
    )
