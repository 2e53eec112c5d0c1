"""What every importer shares: the report, the index of content already stored, and the two halves of
adding one image: `prepare` (read, check, clean, store the file: no database, safe on threads) and
`add_prepared` (the row). The importers (folder, csv_import, fetch, archive) are built from these."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import inspect as sa_inspect
from sqlalchemy import select
from sqlalchemy.orm import Session

from curation.errors import ImageRejected
from curation.ingest.clean import sanitize_image
from curation.store.auth import Actor, require
from curation.store.db import Workbench
from curation.store.files import read_limited, sha256_hex, store_image, store_path, sweep_store
from curation.store.models import Image

Progress = Callable[[int, int], None]  # (done, total)
OUTSIDE = "leads outside the folder being imported (a '..' path, an absolute path or a link): refused"
MAX_REPORTED_WARNINGS = 100_000  # all of them in the report file; the CLI prints the first 20 and counts by kind


@dataclass
class ImportReport:
    imported: int = 0
    missing_images: int = 0  # rows stored as image_missing (URL only)
    already_present: int = 0  # the same source rows (source, id), imported by an earlier run
    # source rows whose picture is byte-identical to one already stored: linked to it, with their own label and
    # metadata (item, "image #N" or the item that stored it)
    linked: list[tuple[str, str]] = field(default_factory=list)
    duplicates: list[tuple[str, str]] = field(default_factory=list)  # (item, why)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (item, reason)
    warnings: list[str] = field(default_factory=list)
    image_ids: list[int] = field(default_factory=list)
    dataset: str | None = None  # the public dataset recipe the CSV was read with

    warning_kinds: Counter = field(default_factory=Counter)  # kind -> count, every warning counted

    def warn(self, message: str, kind: str = "other") -> None:
        self.warning_kinds[kind] += 1
        if len(self.warnings) < MAX_REPORTED_WARNINGS:
            self.warnings.append(message)
        elif len(self.warnings) == MAX_REPORTED_WARNINGS:
            self.warnings.append("... more warnings not shown")

    def summary(self) -> dict:
        return {
            **({"dataset": self.dataset} if self.dataset else {}),
            "imported": self.imported,
            "missing_images": self.missing_images,
            "already_present": self.already_present,
            "linked": len(self.linked),
            "duplicates": len(self.duplicates),
            "failed": len(self.failed),
            "warnings": len(self.warnings),
        }


class KnownContent:
    """Hashes already stored, loaded once per run so each file costs one lookup in memory.
    Values say where the content is: "image #12" for stored rows, the item for this run's files."""

    def __init__(self, session: Session):
        self.original: dict[str, str] = {}
        self.stored: dict[str, str] = {}
        self.rows: dict[str, Image | int] = {}  # either hash -> the row (this run's, unflushed) or its id
        self.keys: dict[str, str] = {}  # either hash -> the store key of its picture
        rows = session.execute(select(Image.id, Image.original_sha256, Image.sha256, Image.file_path))
        for image_id, original, stored, key in rows:
            for digest, index in ((original, self.original), (stored, self.stored)):
                if digest:
                    index[digest] = f"image #{image_id}"
                    self.rows[digest] = image_id
                    if key:
                        self.keys[digest] = key

    def snapshot(self) -> KnownContent:
        """A frozen copy for the preparing threads: the live index changes while they run, and a file
        must be judged against one state (the sequential step then checks the live index)."""
        frozen = object.__new__(KnownContent)
        frozen.original, frozen.stored, frozen.rows = dict(self.original), dict(self.stored), {}
        frozen.keys = dict(self.keys)
        return frozen

    def add(self, image: Image, where: str) -> None:
        self.original[image.original_sha256] = where
        self.stored[image.sha256] = where
        self.rows[image.original_sha256] = self.rows[image.sha256] = image
        if image.file_path:
            self.keys[image.original_sha256] = self.keys[image.sha256] = image.file_path

    def missing_picture(self, wb: Workbench, digest: str) -> str | None:
        """The store key of a known picture that is gone from the store (deleted behind the workbench's back),
        None while it is there: an import of the same file then writes it back."""
        key = self.keys.get(digest)
        return key if key is not None and not wb.images.exists(key) else None

    def holder(self, prepared: Prepared) -> Image | int | None:
        """The stored row holding a duplicate's bytes: its id once it has one (a row of an earlier batch is
        detached from its committed session), else the row itself, to link to before the batch's flush."""
        row = self.rows.get(prepared.original_sha) or self.rows.get(prepared.sha256)
        if isinstance(row, Image) and (identity := sa_inspect(row).identity):
            return identity[0]
        return row


def inside(root: Path, path: Path) -> bool:
    """Whether `path`, with every link and '..' resolved, stays inside `root`. Decided on names alone
    (os.path.realpath needs no existing file), so the answer tells nothing about files outside `root`."""
    real_root = os.path.realpath(root)
    return os.path.commonpath([real_root, os.path.realpath(path)]) == real_root


def start_import(wb: Workbench, actor: Actor, what: str) -> None:
    """Every import checks the role, then clears temp files a killed import left in the store."""
    require(actor, "admin", what)
    sweep_store(wb.store_dir)


def read_image_file(wb: Workbench, path: Path) -> tuple[bytes, str]:
    """(bytes, original sha256) of a file, with the size cap; raises ImageRejected with the reason."""
    try:
        data = read_limited(path, int(wb.settings.max_image_mb * 1e6))
    except ImageRejected:
        raise
    except OSError as e:
        if e.errno == 40:  # ELOOP
            raise ImageRejected("symlink loop") from None
        if not path.exists():
            raise ImageRejected("file not found (or a broken symlink)") from None
        raise ImageRejected(f"cannot read file: {e.strerror}") from None
    return data, sha256_hex(data)


@dataclass(frozen=True)
class Prepared:
    """One file, checked, cleaned and written to the store (or the reason it was skipped).
    Holds no pixel data, so a batch of them costs no memory worth mentioning."""

    item: str
    skip: tuple[str, str] | None = None  # ("failed" | "duplicate", reason)
    original_sha: str = ""
    sha256: str = ""
    relative: str = ""
    width: int = 0
    height: int = 0
    format: str = ""
    n_bytes: int = 0
    dhash: str = ""


def prepare(wb: Workbench, known: KnownContent, item: str, data: bytes, original_sha: str) -> Prepared:
    """Everything per file that needs no database: safe to run on several threads at once
    (decoding and hashing release the GIL; the store is content-addressed, writes are atomic)."""
    gone = known.missing_picture(wb, original_sha) if original_sha in known.original else None
    if original_sha in known.original and gone is None:
        return Prepared(item, ("duplicate", f"same file as {known.original[original_sha]}"), original_sha)
    try:
        clean = sanitize_image(data, max_pixels=int(wb.settings.max_image_megapixels * 1e6))
    except ImageRejected as e:
        return Prepared(item, ("failed", str(e)))
    digest = sha256_hex(clean.data)
    if gone is None and digest in known.stored:
        gone = known.missing_picture(wb, digest)
    if gone is not None and gone == store_path(digest, clean.ext):  # the same picture, under the same key: put back
        store_image(wb.images, clean.data, clean.ext, digest)
        where = known.original.get(original_sha) or known.stored[digest]
        reason = f"same picture as {where}, whose stored copy was missing: written back to the store"
        return Prepared(item, ("duplicate", reason), original_sha, digest)
    if original_sha in known.original:
        return Prepared(item, ("duplicate", f"same file as {known.original[original_sha]}"), original_sha)
    if digest in known.stored:
        reason = f"same picture as {known.stored[digest]} (differs only in metadata)"
        return Prepared(item, ("duplicate", reason), original_sha, digest)
    digest, relative = store_image(wb.images, clean.data, clean.ext, digest)
    return Prepared(
        item, None, original_sha, digest, relative, clean.width, clean.height, clean.format, len(clean.data), clean.dhash
    )


def prepare_path(wb: Workbench, known: KnownContent, path: Path) -> Prepared:
    try:
        data, original_sha = read_image_file(wb, path)
    except ImageRejected as e:
        return Prepared(str(path), ("failed", str(e)))
    return prepare(wb, known, str(path), data, original_sha)


def add_prepared(
    session: Session,
    known: KnownContent,
    report: ImportReport,
    prepared: Prepared,
    make_row: Callable[[], Image],
    existing: Image | None = None,
    link: Callable[[Image | int], None] | None = None,
) -> Image | None:
    """The database half: a new row (or `existing` completed) for a prepared file; None when skipped.
    New rows are added unflushed: callers flush once per batch (one INSERT batch).
    A duplicate of a stored picture is handed to `link` (a source row of its own, kept beside the picture)
    where the caller gives one; otherwise it is reported as a duplicate and nothing is added."""
    item = prepared.item
    duplicate = None
    if prepared.skip is not None:
        kind, reason = prepared.skip
        if kind == "failed":
            report.failed.append((item, reason))
            return None
        duplicate = reason
    # files prepared in parallel can repeat each other: the first one added wins
    elif prepared.original_sha in known.original:
        duplicate = f"same file as {known.original[prepared.original_sha]}"
    elif prepared.sha256 in known.stored:
        duplicate = f"same picture as {known.stored[prepared.sha256]} (differs only in metadata)"
    if duplicate is not None:
        holder = known.holder(prepared)
        if link is not None and existing is None and holder is not None:
            link(holder)
            report.linked.append((item, duplicate))
        else:
            report.duplicates.append((item, duplicate))
        return None
    image = existing or make_row()
    image.sha256, image.original_sha256, image.file_path = prepared.sha256, prepared.original_sha, prepared.relative
    image.width, image.height, image.format, image.n_bytes = prepared.width, prepared.height, prepared.format, prepared.n_bytes
    image.dhash = prepared.dhash
    if image.status == "image_missing":
        image.status = "pending"
    if existing is None:
        session.add(image)
    known.add(image, f"image #{existing.id}" if existing is not None else item)
    report.imported += 1
    return image


def ingest_bytes(
    wb: Workbench,
    session: Session,
    known: KnownContent,
    report: ImportReport,
    item: str,
    data: bytes,
    original_sha: str,
    make_row: Callable[[], Image],
    existing: Image | None = None,
    link: Callable[[Image | int], None] | None = None,
) -> Image | None:
    """prepare + add_prepared for one image, for callers that have its bytes in hand."""
    prepared = prepare(wb, known, item, data, original_sha)
    return add_prepared(session, known, report, prepared, make_row, existing, link)


def flush_new(session: Session, report: ImportReport, rows: list[Image]) -> list[int]:
    session.flush()
    ids = [row.id for row in rows]
    report.image_ids.extend(ids)
    return ids
