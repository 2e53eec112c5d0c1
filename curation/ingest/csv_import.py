"""Import a CSV of images and metadata: generic columns (`path` and/or `url`, `label`, `fitzpatrick`, `id`;
every other column kept as metadata), the Fitzpatrick17k CSV as it is, or a public dataset's metadata CSV
read by its recipe (curation/ingest/datasets.py: HAM10000, ISIC, PAD-UFES-20, DDI; detected from the header or named),
with its images found by file name anywhere under the images folder. A generic CSV's path or url column may name
objects in a bucket (`s3://bucket/key`): they are downloaded OBJECT_CHUNK rows at a time, concurrently, with the
guards a local file gets (the size cap from the length the server announces, before the body is read). Reading the
file and its rows is curation/ingest/csv_rows.py; this module stores them.

The whole file is decoded and parsed once before anything is written (a file that is not UTF-8 or not
CSV is refused whole); rows are then read lazily and committed every CSV_BATCH rows, so memory stays
flat on a million-row file and a run killed midway keeps its finished batches: the same command again
skips them (rows match by id or url) and goes on.

A row is identified by (source, id): the source is the dataset recipe's name, `fitzpatrick17k`, or for a generic
CSV the name given with `source=` (`csv` by default), so ids that two sources both use never collide. A row whose
picture is byte-identical to one already stored becomes a source row linked to that picture (image_sources), with
its own label and metadata: the picture is stored once and no row is lost.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from sqlalchemy import select

from curation.errors import ImageRejected
from curation.ingest.bucket import ObjectReader
from curation.ingest.clean import sanitize_image
from curation.ingest.common import (
    ImportReport,
    KnownContent,
    Progress,
    flush_new,
    ingest_bytes,
    read_image_file,
    start_import,
)
from curation.ingest.csv_rows import (
    CsvLayout,
    CsvRow,
    RowRefused,
    choose_layout,
    locate_file,
    object_address,
    parse_row,
    read_csv_rows,
)
from curation.store import audit
from curation.store.auth import Actor
from curation.store.db import Workbench
from curation.store.files import sha256_hex
from curation.store.models import Image, ImageSource
from schema.bucket import S3_SCHEME, split_address

CSV_BATCH = 5000  # rows per transaction
OBJECT_CHUNK = 200  # rows whose bucket objects are downloaded together: bounds the pictures held in memory


def _is_stored_picture(wb: Workbench, image: Image, where: str, read: Callable[[], tuple[bytes, str]]) -> bool:
    """Whether the file or object at `where` (read by `read`) is the picture `image` holds: the same place as imported
    (no reading), the same bytes, or the same picture once cleaned. One that cannot be read is taken as the same
    (nothing to compare)."""
    if where == image.source_ref:
        return True
    try:
        data, original_sha = read()
        if original_sha == image.original_sha256:
            return True
        clean = sanitize_image(data, max_pixels=int(wb.settings.max_image_megapixels * 1e6))
    except ImageRejected:
        return True
    return sha256_hex(clean.data) == image.sha256


def _new_image(session, source_name: str, row: CsvRow) -> Image:
    """The image a CSV row becomes, with its source row when it has an id."""
    image = Image(
        source=source_name,
        source_ref=row.object_url or str(row.file_path or row.url or ""),
        url=row.url,
        external_id=row.external_id,
        source_label=row.label,
        diagnosis_key=row.diagnosis_key,
        fitzpatrick=row.fitzpatrick,
        status="pending",
        meta=row.meta,
    )
    if row.external_id:
        session.add(
            ImageSource(image=image, source=source_name, external_id=row.external_id, source_label=row.label, meta=row.meta)
        )
    return image


def _link_source_row(session, source_name: str, row: CsvRow, holder: Image | int) -> None:
    """A picture already stored, named by this source row too: the row is kept, beside it."""
    at = {"image": holder} if isinstance(holder, Image) else {"image_id": holder}
    session.add(ImageSource(**at, source=source_name, external_id=row.external_id, source_label=row.label, meta=row.meta))


@dataclass
class _CsvRun:
    """What one import run remembers between rows and batches."""

    layout: CsvLayout
    report: ImportReport
    known: KnownContent
    by_external: dict[str, tuple[int, str]]  # this source's stored ids -> (image id, status)
    seen_external: dict[str, int] = field(default_factory=dict)  # id -> the line that had it first
    looked_for: list[str] = field(default_factory=list)  # names of the first images not found: the hint when none are
    still_missing: int = 0  # rows of an earlier run still waiting for their image
    stored_objects: set[str] = field(default_factory=set)  # s3:// addresses this source already holds
    reader: ObjectReader | None = None  # made when the first row names an object
    fetched: dict[str, bytes | ImageRejected] = field(default_factory=dict)  # this chunk's objects, read together

    def missing_file(self, path: Path | None) -> None:
        if path is not None and len(self.looked_for) < 5:
            self.looked_for.append(path.name)

    def fetch_objects(self, wb: Workbench, chunk: list[dict]) -> None:
        """Download the objects a chunk of rows names, concurrently, before its rows are stored one by one; those
        this source already holds are not downloaded again (a rerun after a network fault fetches what is missing)."""
        wanted = {
            address
            for cells in chunk
            if (address := object_address(self.layout, {k: v for k, v in cells.items() if isinstance(v, str)}))
            and address not in self.stored_objects
            and split_address(address)
        }
        if wanted and self.reader is None:
            self.reader = ObjectReader(int(wb.settings.max_image_mb * 1e6))
        self.fetched = self.reader.read_many(sorted(wanted)) if wanted else {}

    def read(self, wb: Workbench, row: CsvRow) -> tuple[bytes, str]:
        """(bytes, original sha256) of the row's picture, file or object; ImageRejected says why it cannot be."""
        if row.object_url is None:
            return read_image_file(wb, row.file_path)
        data = self.fetched.get(row.object_url)
        if data is None:  # known to this source under another id: read only when it must be compared
            if self.reader is None:
                self.reader = ObjectReader(int(wb.settings.max_image_mb * 1e6))
            data = self.reader.read(*split_address(row.object_url))
        if isinstance(data, ImageRejected):
            raise data
        return data, sha256_hex(data)


def _stored_row(wb: Workbench, session, run: _CsvRun, row: CsvRow) -> tuple[bool, Image | None]:
    """(skip, existing) for a row whose id this source already has: skipped when stored (or refused when its
    picture differs), the stored image to complete when it waited for this file."""
    if not (row.external_id and row.external_id in run.by_external):
        return False, None
    image_id, status = run.by_external[row.external_id]
    has_file = row.object_url is not None or (row.file_path is not None and row.file_path.exists())
    if status == "image_missing" and has_file:
        return False, session.get(Image, image_id)
    where = row.object_url or str(row.file_path)
    if has_file and not _is_stored_picture(wb, session.get(Image, image_id), where, partial(run.read, wb, row)):
        run.report.failed.append(
            (
                row.item,
                f"id {row.external_id!r} of source {run.layout.source_name!r} is image #{image_id}, with another picture: "
                f"is this another source's file? Import it with its own --source NAME; nothing was changed",
            )
        )
        return True, None
    run.report.already_present += 1
    if status == "image_missing" and row.file_path is not None:  # still waiting for its file
        run.still_missing += 1
        run.missing_file(row.file_path)
    return True, None


def _import_row(wb: Workbench, session, run: _CsvRun, line: int, cells: dict, new_rows: list[Image]) -> None:
    """One CSV row into the session: parsed, checked against the file and the source's stored ids, then stored."""
    report, layout = run.report, run.layout
    item = f"{layout.csv_path.name} line {line}"
    try:
        row = parse_row(layout, wb.taxonomy, item, cells)
        if row.external_id and row.external_id in run.seen_external:
            first = run.seen_external[row.external_id]
            report.duplicates.append((item, f"repeats id {row.external_id!r} of line {first}: ids are unique per source"))
            return
        if row.external_id:
            run.seen_external[row.external_id] = line
        locate_file(layout, row)
    except RowRefused as e:
        report.failed.append((item, str(e)))
        return
    skip, existing = _stored_row(wb, session, run, row)
    if skip:
        return
    for message, kind in row.warnings:
        report.warn(message, kind)
    make_row = partial(_new_image, session, layout.source_name, row)
    if row.object_url is not None or (row.file_path is not None and (row.explicit_path or row.file_path.exists())):
        try:
            data, original_sha = run.read(wb, row)
        except ImageRejected as e:
            report.failed.append((item, f"{row.object_url or row.file_path}: {e}"))
            return
        link = partial(_link_source_row, session, layout.source_name, row) if row.external_id else None
        stored = ingest_bytes(wb, session, run.known, report, item, data, original_sha, make_row, existing, link)
        if stored is not None and existing is None:
            new_rows.append(stored)
        elif stored is not None:
            report.image_ids.append(stored.id)
    else:
        run.missing_file(row.file_path)
        image = make_row()
        image.status = "image_missing"
        session.add(image)
        new_rows.append(image)
        report.missing_images += 1


def import_csv(
    wb: Workbench,
    actor: Actor,
    csv_path: Path,
    *,
    images_dir: Path | None = None,
    dataset: str = "auto",
    source: str | None = None,
    progress: Progress | None = None,
) -> ImportReport:
    """Import a CSV of images and metadata, committed every CSV_BATCH rows (see the module docstring).

    Generic columns: `path` (relative to the CSV's folder or images_dir) and/or `url`; optional
    `label`, `fitzpatrick`, `id`; every other column is kept as metadata. The Fitzpatrick17k CSV
    (md5hash, url, label, fitzpatrick_scale, qc, ...) imports as is: rows whose image is not in
    images_dir (as <md5hash>.jpg) are stored as image_missing, for `fetch_images` later.
    `dataset`: a recipe name (ham10000, isic, pad-ufes-20, ddi), `auto` (detected from the header) or `csv`.
    `source`: a generic CSV's source name (ids are unique within it; default `csv`). A recipe's source is its name.
    A recipe's rows whose image is not found are stored as image_missing; importing again with the images
    completes them.
    """
    start_import(wb, actor, "import images")
    csv_path = Path(csv_path)
    header, rows, n_rows = read_csv_rows(csv_path)
    layout = choose_layout(header, csv_path, images_dir=images_dir, dataset=dataset, source=source)
    report = ImportReport(dataset=layout.recipe.name if layout.recipe else None)
    with wb.session() as session:
        by_external = {  # this source's rows: another source's id 1 is another row
            ext: (image_id, status)
            for image_id, ext, status in session.execute(
                select(ImageSource.image_id, ImageSource.external_id, Image.status)
                .join(Image, Image.id == ImageSource.image_id)
                .where(ImageSource.source == layout.source_name)
            )
        }
        stored_objects = set(
            session.scalars(
                select(Image.source_ref).where(Image.source == layout.source_name, Image.source_ref.startswith(S3_SCHEME))
            )
        )
        run = _CsvRun(layout, report, KnownContent(session), by_external, stored_objects=stored_objects)
    # One transaction per batch of rows: memory stays flat on huge files, and a run killed midway keeps
    # its finished batches; the same command again skips them (rows match by id or url) and goes on.
    numbered = enumerate(rows(), start=2)
    while batch := list(itertools.islice(numbered, CSV_BATCH)):
        with wb.session() as session:
            new_rows: list[Image] = []  # flushed together: one INSERT batch, not one per row
            for start in range(0, len(batch), OBJECT_CHUNK):
                chunk = batch[start : start + OBJECT_CHUNK]
                run.fetch_objects(wb, [cells for _, cells in chunk])  # a store fault here keeps no row of the batch
                for line, cells in chunk:
                    if progress:
                        progress(line - 1, n_rows)
                    _import_row(wb, session, run, line, cells, new_rows)
            flush_new(session, report, new_rows)
            run.by_external.update((r.external_id, (r.id, r.status)) for r in new_rows if r.external_id)
    if layout.recipe is not None and (not_found := report.missing_images + run.still_missing) and run.looked_for:
        report.warn(
            f"{not_found} images were not found under {layout.base_dir} (looked for {', '.join(run.looked_for)}"
            f"{', ...' if not_found > len(run.looked_for) else ''}); they wait as image_missing: put them there "
            "(or name the folder with --images-dir) and import again",
            "images not found",
        )
    with wb.session() as session:
        audit.record(
            session, actor, "images.import_csv", "image", None, source=str(csv_path), summary=report.summary(), n_rows=n_rows
        )
    return report
