"""Import images and metadata: folders (recursive), CSV files (generic or Fitzpatrick17k), and
downloads of images that are only known by URL.

Rules (issue: foundation):
- content-addressed: the same bytes are never stored twice; re-running an import adds nothing;
- format is sniffed from content, never from the extension;
- every file is sanitised (curation/store/files.py): EXIF removed after applying its orientation;
- a bad file or row is reported with its reason and skipped; the rest goes on;
- a CSV import is one transaction (all rows or none); a folder import commits in batches, so an
  interrupted import keeps finished batches and a re-run picks up the rest.
"""

from __future__ import annotations

import csv
import io
import itertools
import ipaddress
import os
import socket
import tempfile
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Callable, Iterator
from urllib.parse import urljoin, urlsplit

import httpx
from sqlalchemy import select
from sqlalchemy.orm import Session

from curation.store import audit
from curation.store.auth import Actor, require
from curation.store.db import Workbench
from curation.errors import FetchError, ImageRejected, IngestError
from curation.store.models import Image
from curation.store.files import read_limited, sanitize_image, sha256_hex, store_image, sweep_store

Progress = Callable[[int, int], None]  # (done, total)
FOLDER_BATCH = 200
CSV_BATCH = 5000  # rows per transaction
PREPARE_THREADS = 4  # decoding and hashing release the GIL: files are prepared in parallel
MAX_REPORTED_WARNINGS = 200
_SKIP_NAMES = {"thumbs.db", "desktop.ini"}
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_PATH_COLUMNS = ("path", "image", "image_path", "file", "filename", "file_path")
_URL_COLUMNS = ("url", "image_url")
_LABEL_COLUMNS = ("label", "diagnosis", "diagnosis_label")
_FITZ_COLUMNS = ("fitzpatrick", "fitzpatrick_scale", "fitzpatrick_type", "skin_type")
_FITZ_REQUIRED = {"md5hash", "label", "fitzpatrick_scale", "url"}
_ROMAN = {"i": 1, "ii": 2, "iii": 3, "iv": 4, "v": 5, "vi": 6}


@dataclass
class ImportReport:
    imported: int = 0
    missing_images: int = 0  # rows stored as image_missing (URL only)
    already_present: int = 0  # rows or files imported by an earlier run
    duplicates: list[tuple[str, str]] = field(default_factory=list)  # (item, why)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (item, reason)
    warnings: list[str] = field(default_factory=list)
    image_ids: list[int] = field(default_factory=list)

    def warn(self, message: str) -> None:
        if len(self.warnings) < MAX_REPORTED_WARNINGS:
            self.warnings.append(message)
        elif len(self.warnings) == MAX_REPORTED_WARNINGS:
            self.warnings.append("... more warnings not shown")

    def summary(self) -> dict:
        return {
            "imported": self.imported,
            "missing_images": self.missing_images,
            "already_present": self.already_present,
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
        for image_id, original, stored in session.execute(select(Image.id, Image.original_sha256, Image.sha256)):
            if original:
                self.original[original] = f"image #{image_id}"
            if stored:
                self.stored[stored] = f"image #{image_id}"

    def snapshot(self) -> "KnownContent":
        """A frozen copy for the preparing threads: the live index changes while they run, and a file
        must be judged against one state (the sequential step then checks the live index)."""
        frozen = object.__new__(KnownContent)
        frozen.original, frozen.stored = dict(self.original), dict(self.stored)
        return frozen

    def add(self, image: Image, where: str) -> None:
        self.original[image.original_sha256] = where
        self.stored[image.sha256] = where


def _start_import(wb: Workbench, actor: Actor, what: str) -> None:
    """Every import checks the role, then clears temp files a killed import left in the store."""
    require(actor, "admin", what)
    sweep_store(wb.store_dir)


def _clean_file(wb: Workbench, path: Path) -> tuple[bytes, str]:
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
    if original_sha in known.original:
        return Prepared(item, ("duplicate", f"same file as {known.original[original_sha]}"))
    try:
        clean = sanitize_image(data, max_pixels=int(wb.settings.max_image_megapixels * 1e6))
    except ImageRejected as e:
        return Prepared(item, ("failed", str(e)))
    digest = sha256_hex(clean.data)
    if digest in known.stored:
        return Prepared(item, ("duplicate", f"same picture as {known.stored[digest]} (differs only in metadata)"))
    digest, relative = store_image(wb.store_dir, clean, digest)
    return Prepared(item, None, original_sha, digest, relative, clean.width, clean.height, clean.format, len(clean.data), clean.dhash)


def _prepare_path(wb: Workbench, known: KnownContent, path: Path) -> Prepared:
    try:
        data, original_sha = _clean_file(wb, path)
    except ImageRejected as e:
        return Prepared(str(path), ("failed", str(e)))
    return prepare(wb, known, str(path), data, original_sha)


def add_prepared(
    session: Session, known: KnownContent, report: ImportReport, prepared: Prepared,
    make_row: Callable[[], Image], existing: Image | None = None,
) -> Image | None:
    """The database half: a new row (or `existing` completed) for a prepared file; None when skipped.
    New rows are added unflushed: callers flush once per batch (one INSERT batch)."""
    item = prepared.item
    if prepared.skip is not None:
        kind, reason = prepared.skip
        (report.failed if kind == "failed" else report.duplicates).append((item, reason))
        return None
    # files prepared in parallel can repeat each other: the first one added wins
    if prepared.original_sha in known.original:
        report.duplicates.append((item, f"same file as {known.original[prepared.original_sha]}"))
        return None
    if prepared.sha256 in known.stored:
        report.duplicates.append((item, f"same picture as {known.stored[prepared.sha256]} (differs only in metadata)"))
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
    wb: Workbench, session: Session, known: KnownContent, report: ImportReport, item: str,
    data: bytes, original_sha: str, make_row: Callable[[], Image], existing: Image | None = None,
) -> Image | None:
    """prepare + add_prepared for one image, for callers that have its bytes in hand."""
    return add_prepared(session, known, report, prepare(wb, known, item, data, original_sha), make_row, existing)


def _flush_new(session: Session, report: ImportReport, rows: list[Image]) -> list[int]:
    session.flush()
    ids = [row.id for row in rows]
    report.image_ids.extend(ids)
    return ids


# -- folders ---------------------------------------------------------------------------------------
def _walk_files(root: Path, report: ImportReport) -> Iterator[Path]:
    def on_error(error: OSError) -> None:
        report.failed.append((str(error.filename), f"cannot read folder: {error.strerror}"))

    for folder, dirs, files in os.walk(root, onerror=on_error, followlinks=False):
        dirs.sort()
        for d in dirs:
            if os.path.islink(os.path.join(folder, d)):
                report.warn(f"{os.path.join(folder, d)}: symlinked folder not followed (avoids loops); import it directly")
        for name in sorted(files):
            if name.startswith(".") or name.lower() in _SKIP_NAMES:
                continue
            yield Path(folder) / name


def import_folder(
    wb: Workbench, actor: Actor, root: Path, *, label_from_folder: bool = False, progress: Progress | None = None
) -> ImportReport:
    """Import every image under `root` (recursive). With label_from_folder, each image's parent
    folder name is its source label (ImageFolder layout: root/<label>/<image>)."""
    _start_import(wb, actor, "import images")
    root = Path(root)
    if not root.is_dir():
        raise IngestError(f"{root} is not a folder")
    report = ImportReport()
    files = list(_walk_files(root, report))
    with wb.session() as session:
        known = KnownContent(session)
    workers = max(1, min(PREPARE_THREADS, os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for start in range(0, len(files), FOLDER_BATCH):
            batch = files[start : start + FOLDER_BATCH]
            frozen = known.snapshot()
            prepared = pool.map(lambda path: _prepare_path(wb, frozen, path), batch)
            with wb.session() as session:
                new_rows: list[Image] = []
                for index, (path, ready) in enumerate(zip(batch, prepared), start):
                    label = path.parent.name if label_from_folder and path.parent != root else None

                    def make_row(path=path, label=label) -> Image:
                        return Image(
                            source="folder", source_ref=str(path.resolve()), status="pending",
                            source_label=label, diagnosis_key=wb.taxonomy.normalise(label) if label else None,
                            meta={"filename": path.name},
                        )

                    row = add_prepared(session, known, report, ready, make_row)
                    if row is not None:
                        new_rows.append(row)
                        if label and row.diagnosis_key is None:
                            report.warn(f"{ready.item}: folder label {label!r} is not in the taxonomy; kept as free text")
                    if progress:
                        progress(index + 1, len(files))
                new_ids = _flush_new(session, report, new_rows)
                if new_ids:
                    audit.record(session, actor, "images.import", "image", None, source=str(root), image_ids=new_ids)
    if progress and not files:
        progress(0, 0)
    return report


# -- CSV -------------------------------------------------------------------------------------------
def _parse_fitzpatrick(raw: str | None) -> int | None:
    """1..6, or None for unknown ('', -1, 'unknown', 'nan'); ValueError otherwise."""
    text = (raw or "").strip().lower()
    if text in ("", "-1", "unknown", "nan", "na", "n/a", "none"):
        return None
    if text in _ROMAN:
        return _ROMAN[text]
    try:
        number = float(text)
    except ValueError:
        number = float("nan")
    if number.is_integer() and 1 <= number <= 6:
        return int(number)
    raise ValueError(f"Fitzpatrick type must be 1-6 (or I-VI; empty or -1 for unknown), got {raw!r}")


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _pick(columns: list[str], candidates: tuple[str, ...]) -> str | None:
    return next((c for c in candidates if c in columns), None)


def _read_csv(path: Path) -> tuple[list[str], Callable[[], Iterator[dict[str, str]]], int]:
    """(header, a function giving the rows one at a time, row count). The whole file is decoded and
    parsed once up front, so a file that is not UTF-8 or not CSV is refused before anything is written;
    parsed rows are only ever held one batch at a time (a million-row file stays small)."""
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except OSError as e:
        raise IngestError(f"cannot read {path}: {e.strerror}") from None
    except UnicodeDecodeError as e:
        raise IngestError(
            f"{path} is not UTF-8 text (bad byte at position {e.start}); re-save it as UTF-8 CSV and import again"
        ) from None
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = [(h or "").strip().lower() for h in next(reader, [])]
        n_rows = sum(1 for row in reader if row)  # blank lines are skipped, as DictReader does
    except csv.Error as e:
        raise IngestError(f"{path}: malformed CSV at line {reader.line_num}: {e}; nothing was imported") from None
    if not header:
        raise IngestError(f"{path} is empty: expected a header row")
    if len(set(header)) != len(header):
        raise IngestError(f"{path}: duplicate column names in the header: {header}")

    def rows() -> Iterator[dict[str, str]]:
        lines = io.StringIO(text, newline="")
        next(csv.reader(lines), None)  # past the header (it may span lines when quoted)
        return csv.DictReader(lines, fieldnames=header)

    return header, rows, n_rows


def import_csv(
    wb: Workbench, actor: Actor, csv_path: Path, *, images_dir: Path | None = None, progress: Progress | None = None
) -> ImportReport:
    """Import a CSV of images and metadata, in one transaction.

    Generic columns: `path` (relative to the CSV's folder or images_dir) and/or `url`; optional
    `label`, `fitzpatrick`, `id`; every other column is kept as metadata. The Fitzpatrick17k CSV
    (md5hash, url, label, fitzpatrick_scale, qc, ...) imports as is: rows whose image is not in
    images_dir (as <md5hash>.jpg) are stored as image_missing, for `fetch_images` later.
    """
    _start_import(wb, actor, "import images")
    csv_path = Path(csv_path)
    header, rows, n_rows = _read_csv(csv_path)
    fitz17k = _FITZ_REQUIRED <= set(header)
    path_col, url_col = _pick(header, _PATH_COLUMNS), _pick(header, _URL_COLUMNS)
    label_col, fitz_col = _pick(header, _LABEL_COLUMNS), _pick(header, _FITZ_COLUMNS)
    id_col = "md5hash" if fitz17k else _pick(header, ("id", "image_id"))
    if not (path_col or url_col):
        raise IngestError(
            f"{csv_path.name}: no image column. Found columns {header}; need 'path' (file relative to the CSV) "
            "or 'url', plus optional 'label', 'fitzpatrick', 'id'. Nothing was imported."
        )
    base_dir = Path(images_dir) if images_dir else csv_path.parent
    used = {c for c in (path_col, url_col, label_col, fitz_col) if c}
    source = "fitzpatrick17k" if fitz17k else "csv"
    report = ImportReport()
    with wb.session() as session:
        known = KnownContent(session)
        by_external = {
            ext: (image_id, status)
            for image_id, ext, status in session.execute(select(Image.id, Image.external_id, Image.status)).all()
            if ext
        }
    seen_external: set[str] = set()
    # One transaction per batch of rows: memory stays flat on huge files, and a run killed midway keeps
    # its finished batches; the same command again skips them (rows match by id or url) and goes on.
    numbered = enumerate(rows(), start=2)
    while batch := list(itertools.islice(numbered, CSV_BATCH)):
        with wb.session() as session:
            new_rows: list[Image] = []  # flushed together: one INSERT batch, not one per row
            for line, row in batch:
                item = f"{csv_path.name} line {line}"
                if progress:
                    progress(line - 1, n_rows)
                values = {k: (v if isinstance(v, str) else "") for k, v in row.items() if k is not None}
                if None in row:
                    report.failed.append((item, "more cells than header columns; check quoting"))
                    continue
                for column, value in values.items():
                    if value.startswith(_FORMULA_START) and not _is_number(value):
                        report.warn(f"{item}: cell {column!r} starts with {value[:1]!r} (spreadsheet formula); stored as plain text")
                try:
                    fitzpatrick = _parse_fitzpatrick(values.get(fitz_col)) if fitz_col else None
                except ValueError as e:
                    report.failed.append((item, str(e)))
                    continue
                external_id = (values.get(id_col) or "").strip() or None if id_col else None
                url = (values.get(url_col) or "").strip() or None if url_col else None
                external_id = external_id or url
                if external_id and external_id in seen_external:
                    report.duplicates.append((item, f"repeats id {external_id!r} from an earlier line"))
                    continue
                if external_id:
                    seen_external.add(external_id)
                label = (values.get(label_col) or "").strip() or None if label_col else None
                diagnosis_key = wb.taxonomy.normalise(label) if label else None
                if label and diagnosis_key is None:
                    report.warn(f"{item}: label {label!r} is not in the taxonomy; kept as free text (fix it in review)")
                file_path, explicit_path = None, False
                if path_col and values.get(path_col, "").strip():
                    file_path, explicit_path = base_dir / values[path_col].strip(), True
                elif fitz17k and images_dir and external_id:
                    file_path = base_dir / f"{external_id}.jpg"
                elif url and images_dir:
                    file_path = base_dir / Path(urlsplit(url).path).name

                existing = None
                if external_id and external_id in by_external:
                    image_id, status = by_external[external_id]
                    if status != "image_missing" or file_path is None or not file_path.exists():
                        report.already_present += 1
                        continue
                    existing = session.get(Image, image_id)

                def make_row() -> Image:
                    return Image(
                        source=source, source_ref=str(file_path or url or ""), url=url, external_id=external_id,
                        source_label=label, diagnosis_key=diagnosis_key, fitzpatrick=fitzpatrick, status="pending",
                        meta={k: v for k, v in values.items() if k not in used and v != ""},
                    )

                # A file named in the CSV must exist; one derived from images_dir is used when present.
                if file_path is not None and (explicit_path or file_path.exists()):
                    try:
                        data, original_sha = _clean_file(wb, file_path)
                    except ImageRejected as e:
                        report.failed.append((item, f"{file_path}: {e}"))
                        continue
                    row = ingest_bytes(wb, session, known, report, item, data, original_sha, make_row, existing)
                    if row is not None and existing is None:
                        new_rows.append(row)
                    elif row is not None:
                        report.image_ids.append(row.id)
                else:
                    image = make_row()
                    image.status = "image_missing"
                    session.add(image)
                    new_rows.append(image)
                    report.missing_images += 1
            _flush_new(session, report, new_rows)
            by_external.update((r.external_id, (r.id, r.status)) for r in new_rows if r.external_id)
    with wb.session() as session:
        audit.record(
            session, actor, "images.import_csv", "image", None,
            source=str(csv_path), summary=report.summary(), n_rows=n_rows,
        )
    return report


def import_path(wb: Workbench, actor: Actor, path: Path, **options) -> ImportReport:
    """A folder, a CSV file, or a single image file."""
    path = Path(path).expanduser()
    if path.is_dir():
        options.pop("images_dir", None)
        return import_folder(wb, actor, path, **options)
    if not path.exists():
        raise IngestError(f"{path} does not exist")
    if path.suffix.lower() == ".zip":
        options.pop("images_dir", None)
        return import_zip(wb, actor, path, **options)
    if path.suffix.lower() in (".csv", ".tsv", ".txt"):
        options.pop("label_from_folder", None)
        return import_csv(wb, actor, path, **options)
    _start_import(wb, actor, "import images")
    report = ImportReport()
    with wb.session() as session:
        known = KnownContent(session)
        try:
            data, original_sha = _clean_file(wb, path)
        except ImageRejected as e:
            report.failed.append((str(path), str(e)))
            return report
        row = ingest_bytes(
            wb, session, known, report, str(path), data, original_sha,
            lambda: Image(source="folder", source_ref=str(path.resolve()), status="pending", meta={"filename": path.name}),
        )
        if row is not None and _flush_new(session, report, [row]):
            audit.record(session, actor, "images.import", "image", report.image_ids[0], source=str(path))
    return report


# -- downloads -------------------------------------------------------------------------------------
def _check_address(url: str, allow_private: bool) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise FetchError(f"only http and https URLs are fetched, not {parts.scheme or 'no scheme'!r}")
    if not parts.hostname:
        raise FetchError("URL has no host")
    try:
        infos = socket.getaddrinfo(parts.hostname, parts.port or (443 if parts.scheme == "https" else 80))
    except socket.gaierror:
        raise FetchError(f"cannot resolve host {parts.hostname!r} (no network?)") from None
    if allow_private:
        return
    for info in infos:
        address = ipaddress.ip_address(info[4][0])
        if (
            address.is_private or address.is_loopback or address.is_link_local or address.is_multicast
            or address.is_reserved or address.is_unspecified
        ):
            raise FetchError(
                f"refused: {parts.hostname} resolves to a private, loopback or link-local address ({address}); "
                "set fetch_allow_private (SKINFLOW_FETCH_ALLOW_PRIVATE=1) to allow it"
            )


def download(url: str, *, timeout_s: float, max_bytes: int, allow_private: bool, max_redirects: int = 5) -> bytes:
    """GET a URL with every guard: scheme, address check on each redirect hop, size cap, deadline."""
    deadline = time.monotonic() + timeout_s * 3
    with httpx.Client(follow_redirects=False, timeout=timeout_s, trust_env=False) as client:
        for _hop in range(max_redirects + 1):
            _check_address(url, allow_private)
            try:
                with client.stream("GET", url) as response:
                    if response.is_redirect:
                        url = urljoin(url, response.headers.get("location", ""))
                        continue
                    if response.status_code != 200:
                        raise FetchError(f"HTTP {response.status_code} from {urlsplit(url).hostname}")
                    declared = int(response.headers.get("content-length") or 0)
                    if declared > max_bytes:
                        raise FetchError(f"image is {declared / 1e6:.1f} MB, over the {max_bytes / 1e6:.0f} MB limit")
                    chunks, total = [], 0
                    for chunk in response.iter_bytes():
                        total += len(chunk)
                        if total > max_bytes:
                            raise FetchError(f"download exceeded the {max_bytes / 1e6:.0f} MB limit; stopped")
                        if time.monotonic() > deadline:
                            raise FetchError(f"download took longer than {timeout_s * 3:.0f} s; stopped")
                        chunks.append(chunk)
                    return b"".join(chunks)
            except httpx.TimeoutException:
                raise FetchError(f"timed out after {timeout_s:.0f} s") from None
            except httpx.HTTPError as e:
                raise FetchError(f"download failed: {e.__class__.__name__}") from None
    raise FetchError(f"more than {max_redirects} redirects")


def fetch_images(
    wb: Workbench, actor: Actor, *, limit: int | None = None, allow_private: bool | None = None,
    progress: Progress | None = None,
) -> ImportReport:
    """Download images of rows stored as image_missing. Each image commits on its own, so an
    interrupted run keeps what it fetched and a re-run continues with the rest."""
    _start_import(wb, actor, "fetch images")
    allow = wb.settings.fetch_allow_private if allow_private is None else allow_private
    with wb.session() as session:
        query = select(Image.id, Image.url).where(Image.status == "image_missing", Image.url.is_not(None)).order_by(Image.id)
        todo = session.execute(query.limit(limit) if limit else query).all()
        known = KnownContent(session)
    report = ImportReport()
    for index, (image_id, url) in enumerate(todo, 1):
        item = f"image #{image_id} {url}"
        try:
            data = download(
                url, timeout_s=wb.settings.fetch_timeout_s, max_bytes=int(wb.settings.max_image_mb * 1e6), allow_private=allow
            )
        except FetchError as e:
            report.failed.append((item, str(e)))
        else:
            with wb.session() as session:
                image = session.get(Image, image_id)
                if image is not None and image.status == "image_missing":
                    if ingest_bytes(wb, session, known, report, item, data, sha256_hex(data), lambda: image, image):
                        report.image_ids.append(image_id)
                        audit.record(session, actor, "image.fetch", "image", image_id, url=url)
        if progress:
            progress(index, len(todo))
    return report


# -- zip uploads -----------------------------------------------------------------------------------
MAX_ZIP_ENTRIES = 100_000
MAX_ZIP_RATIO = 200  # a member that inflates more than this is a bomb, not a photo


def _safe_member_path(name: str) -> PurePosixPath:
    path = PurePosixPath(name.replace("\\", "/"))
    if path.is_absolute() or ".." in path.parts or (path.parts and path.parts[0].endswith(":")):
        raise IngestError(f"refused: the archive entry {name!r} points outside the archive (zip-slip); nothing was imported")
    return path


def import_zip(wb: Workbench, actor: Actor, archive: Path, *, label_from_folder: bool = False, progress: Progress | None = None) -> ImportReport:
    """Import the images inside a zip (an upload from the app). Every entry is checked before
    anything is extracted: paths that escape the archive (zip-slip), links, too many entries and
    entries that inflate implausibly (zip bomb) refuse the whole archive."""
    _start_import(wb, actor, "import images")
    max_bytes = int(wb.settings.max_image_mb * 1e6)
    try:
        with zipfile.ZipFile(archive) as bundle:
            members = [m for m in bundle.infolist() if not m.is_dir()]
            if len(members) > MAX_ZIP_ENTRIES:
                raise IngestError(f"refused: the archive has {len(members)} files, over {MAX_ZIP_ENTRIES}; split it")
            for member in members:
                _safe_member_path(member.filename)
                if (member.external_attr >> 16) & 0o170000 == 0o120000:
                    raise IngestError(f"refused: the archive entry {member.filename!r} is a symbolic link; nothing was imported")
                if member.file_size > max_bytes or member.file_size > max(member.compress_size, 1) * MAX_ZIP_RATIO:
                    raise IngestError(f"refused: the archive entry {member.filename!r} inflates to {member.file_size / 1e6:.0f} MB "
                                      "(zip-bomb guard); nothing was imported")
            with tempfile.TemporaryDirectory(prefix="skinflow-zip-") as folder:
                root = Path(folder)
                for member in members:
                    target = root / _safe_member_path(member.filename)
                    target.parent.mkdir(parents=True, exist_ok=True)
                    with bundle.open(member) as source, target.open("wb") as sink:
                        copied = 0
                        for block in iter(lambda: source.read(1 << 20), b""):
                            copied += len(block)
                            if copied > max_bytes:  # sizes in the directory can lie
                                raise IngestError(f"refused: {member.filename!r} is larger than its archive entry says; nothing was imported")
                            sink.write(block)
                return import_folder(wb, actor, root, label_from_folder=label_from_folder, progress=progress)
    except zipfile.BadZipFile:
        raise IngestError(f"{Path(archive).name} is not a readable zip archive") from None
