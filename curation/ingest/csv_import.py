"""Import a CSV of images and metadata: generic columns (`path` and/or `url`, `label`, `fitzpatrick`, `id`;
every other column kept as metadata), the Fitzpatrick17k CSV as it is, or a public dataset's metadata CSV
read by its recipe (schema/datasets.py: HAM10000, ISIC, PAD-UFES-20, DDI; detected from the header or named),
with its images found by file name anywhere under the images folder.

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

import csv
import io
import itertools
import os
import re
from pathlib import Path
from typing import Callable, Iterator
from urllib.parse import urlsplit

from sqlalchemy import select

from curation.errors import ImageRejected, IngestError
from curation.export.formats import FORMULA_START
from curation.ingest.clean import sanitize_image
from curation.ingest.common import (
    OUTSIDE,
    ImportReport,
    KnownContent,
    Progress,
    flush_new,
    ingest_bytes,
    inside,
    read_image_file,
    start_import,
)
from curation.store import audit
from curation.store.auth import Actor
from curation.store.db import Workbench
from curation.store.files import sha256_hex
from curation.store.models import Image, ImageSource
from schema.datasets import DatasetRecipe, DatasetRecipeError, dataset_recipes, detect_recipe, recipe_named

CSV_BATCH = 5000  # rows per transaction
MAX_CSV_COLUMNS = 256  # public dermatology sets have under 40; a 200,000-column row is an attack, not data
MAX_METADATA_CHARS = 16_000  # per row, names and values of the columns kept as metadata
_PATH_COLUMNS = ("path", "image", "image_path", "file", "filename", "file_path")
_URL_COLUMNS = ("url", "image_url")
_LABEL_COLUMNS = ("label", "diagnosis", "diagnosis_label")
_FITZ_COLUMNS = ("fitzpatrick", "fitzpatrick_scale", "fitzpatrick_type", "skin_type")
_FITZ_REQUIRED = {"md5hash", "label", "fitzpatrick_scale", "url"}
_ROMAN = {"i": 1, "ii": 2, "iii": 3, "iv": 4, "v": 5, "vi": 6}
_SOURCE_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]{0,31}")
_RESERVED_SOURCES = {"folder", "synthetic", "fitzpatrick17k", "upload", "zip"}


def parse_fitzpatrick(raw: str | None) -> int | None:
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


def read_csv_rows(path: Path) -> tuple[list[str], Callable[[], Iterator[dict[str, str]]], int]:
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
    if len(header) > MAX_CSV_COLUMNS:
        raise IngestError(
            f"{path} has {len(header):,} columns; at most {MAX_CSV_COLUMNS} are imported (the image, label and metadata "
            "columns): remove the others and import again. Nothing was imported."
        )

    def rows() -> Iterator[dict[str, str]]:
        lines = io.StringIO(text, newline="")
        next(csv.reader(lines), None)  # past the header (it may span lines when quoted)
        return csv.DictReader(lines, fieldnames=header)

    return header, rows, n_rows


def _choose_recipe(dataset: str, header: list[str], csv_path: Path) -> DatasetRecipe | None:
    """The recipe to read this CSV with: `auto` detects it from the header, `csv` means none."""
    name = dataset.strip().lower()
    if name == "csv":
        return None
    try:
        if name == "auto":
            return detect_recipe(header)
        recipe = recipe_named(name)
        recipe.id_column(header)  # refuses a CSV without the recipe's columns
    except DatasetRecipeError as e:
        raise IngestError(f"{csv_path.name}: {e}") from None
    return recipe


def _files_by_name(folder: Path) -> dict[str, Path | None]:
    """Every file under `folder` by its name (None when a name is there twice: ambiguous). Public datasets ship
    their images in several sub-folders (HAM10000_images_part_1, imgs_part_2 ...) named by image id."""
    found: dict[str, Path | None] = {}
    for root, _, names in os.walk(folder):  # does not follow links to folders
        for name in names:
            found[name] = None if name in found else Path(root) / name
    return found


def _is_stored_picture(wb: Workbench, image: Image, path: Path) -> bool:
    """Whether the file at `path` is the picture `image` holds: the same path as imported (no reading), the same
    bytes, or the same picture once cleaned. A file that cannot be read is taken as the same (nothing to compare)."""
    if str(path) == image.source_ref:
        return True
    try:
        data, original_sha = read_image_file(wb, path)
        if original_sha == image.original_sha256:
            return True
        clean = sanitize_image(data, max_pixels=int(wb.settings.max_image_megapixels * 1e6))
    except ImageRejected:
        return True
    return sha256_hex(clean.data) == image.sha256


def _source_name(given: str | None, recipe: DatasetRecipe | None, fitz17k: bool, csv_path: Path) -> str:
    """The source this CSV's rows belong to: ids are unique within it."""
    if recipe is not None or fitz17k:
        name = recipe.name if recipe is not None else "fitzpatrick17k"
        if given and given.strip().lower() != name:
            raise IngestError(f"{csv_path.name} is read as {name}, and its rows belong to that source: leave out --source")
        return name
    name = (given or "csv").strip().lower()
    taken = _RESERVED_SOURCES | set(dataset_recipes())  # the importers' own sources: their ids are theirs
    if not _SOURCE_NAME.fullmatch(name) or name in taken:
        raise IngestError(
            f"--source {given!r}: a source name is 1-32 lowercase letters, digits, '.', '_' or '-', and not one of "
            f"{', '.join(sorted(taken))}; e.g. --source clinic-a. Nothing was imported."
        )
    return name


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
    recipe = _choose_recipe(dataset, header, csv_path)
    fitz17k = recipe is None and _FITZ_REQUIRED <= set(header)
    path_col, url_col = _pick(header, _PATH_COLUMNS), _pick(header, _URL_COLUMNS)
    label_col, fitz_col = _pick(header, _LABEL_COLUMNS), _pick(header, _FITZ_COLUMNS)
    id_col = "md5hash" if fitz17k else _pick(header, ("id", "image_id"))
    if recipe is not None:
        path_col, url_col, label_col = None, _pick(header, _URL_COLUMNS), recipe.label_column
        id_col, fitz_col = recipe.id_column(header), recipe.fitzpatrick_column
    if not (path_col or url_col or recipe):
        known = detect_recipe(header)
        hint = f" It looks like {known.title} metadata: import it with --dataset {known.name}." if known else ""
        raise IngestError(
            f"{csv_path.name}: no image column. Found columns {header}; need 'path' (file relative to the CSV) "
            f"or 'url', plus optional 'label', 'fitzpatrick', 'id'. Nothing was imported.{hint}"
        )
    base_dir = Path(images_dir) if images_dir else csv_path.parent
    used = {c for c in (path_col, url_col, label_col, fitz_col) if c}
    source_name = _source_name(source, recipe, fitz17k, csv_path)
    report = ImportReport()
    files = _files_by_name(base_dir) if recipe is not None and base_dir.is_dir() else {}
    report.dataset = recipe.name if recipe else None
    with wb.session() as session:
        known = KnownContent(session)
        by_external = {  # this source's rows: another source's id 1 is another row
            ext: (image_id, status)
            for image_id, ext, status in session.execute(
                select(ImageSource.image_id, ImageSource.external_id, Image.status)
                .join(Image, Image.id == ImageSource.image_id)
                .where(ImageSource.source == source_name)
            )
        }
    seen_external: dict[str, int] = {}  # id -> the line that had it first
    looked_for: list[str] = []  # names of the first images not found: the hint when none are
    still_missing = 0  # rows of an earlier run still waiting for their image
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
                row_warnings: list[tuple[str, str]] = []  # reported once the row is imported: not again on every rerun
                if None in row:
                    report.failed.append((item, "more cells than header columns; check quoting"))
                    continue
                meta_chars = sum(len(k) + len(v) for k, v in values.items() if k not in used)
                if meta_chars > MAX_METADATA_CHARS:  # shown with the image on every rerun of the Annotate page
                    report.failed.append(
                        (item, f"{meta_chars:,} characters of metadata, over {MAX_METADATA_CHARS:,}: shorten or drop columns")
                    )
                    continue
                for column, value in values.items():
                    if value.startswith(FORMULA_START) and not _is_number(value):
                        row_warnings.append(
                            (
                                f"{item}: cell {column!r} starts with {value[:1]!r} (spreadsheet formula); stored as plain text",
                                "formula cell",
                            )
                        )
                extra_meta: dict[str, str] = {}
                try:
                    if recipe is not None and recipe.fitzpatrick_bands and fitz_col:
                        fitzpatrick, band = None, values.get(fitz_col, "").strip()
                        if band:
                            if band not in recipe.fitzpatrick_bands:
                                raise ValueError(f"skin tone {band!r} is not one of {', '.join(recipe.fitzpatrick_bands)}")
                            extra_meta["fitzpatrick_band"] = recipe.fitzpatrick_bands[band]
                    else:
                        fitzpatrick = parse_fitzpatrick(values.get(fitz_col)) if fitz_col else None
                except ValueError as e:
                    report.failed.append((item, str(e)))
                    continue
                external_id = (values.get(id_col) or "").strip() or None if id_col else None
                if recipe is not None and external_id is None:  # an empty image_name beside isic_id: the next id column
                    external_id = next((values[c].strip() for c in recipe.id_columns if (values.get(c) or "").strip()), None)
                url = (values.get(url_col) or "").strip() or None if url_col else None
                external_id = external_id or url
                if external_id and external_id in seen_external:
                    report.duplicates.append(
                        (item, f"repeats id {external_id!r} of line {seen_external[external_id]}: ids are unique per source")
                    )
                    continue
                if external_id:
                    seen_external[external_id] = line
                label = (values.get(label_col) or "").strip() or None if label_col else None
                diagnosis_key = wb.taxonomy.normalise(label) if label else None
                if recipe is not None:  # what a row carries whatever its label
                    scope = (values.get(recipe.lesion_scope) or "").strip() if recipe.lesion_scope else ""
                    if scope and (lesion := (values.get("lesion_id") or "").strip()):
                        extra_meta.update(lesion_id=f"{scope}/{lesion}", source_lesion_id=lesion)
                    if recipe.license_column and (license_ := (values.get(recipe.license_column) or "").strip()):
                        extra_meta["image_license"] = license_  # carried into exports and counted on the card
                if label and recipe is not None:
                    mapped = recipe.map_label(label, wb.taxonomy)
                    diagnosis_key = mapped.key
                    if (
                        mapped.group9 and mapped.key is None
                    ):  # a code spanning several labels: the group, and the code stays the source label
                        extra_meta.update(label_group9=mapped.group9, label_group3=mapped.group3)
                    if mapped.note:
                        extra_meta["label_meaning"] = mapped.note
                    if diagnosis_key is None and not mapped.group9 and (group3 := recipe.row_group3(values)):
                        extra_meta["label_group3"] = group3  # the row's own truth when its code maps to nothing
                    if provenance := recipe.provenance(values):
                        extra_meta["label_provenance"] = provenance  # what `verify --where` and the card count by
                    if not mapped.known and diagnosis_key is None:
                        row_warnings.append(
                            (
                                f"{item}: label {label!r} is not in the {recipe.name} crosswalk; kept as free text",
                                "label kept as free text",
                            )
                        )
                elif label and diagnosis_key is None:
                    row_warnings.append(
                        (
                            f"{item}: label {label!r} is not in the taxonomy; kept as free text (fix it in review)",
                            "label kept as free text",
                        )
                    )
                file_path, explicit_path = None, False
                if recipe is not None and not external_id:
                    report.failed.append((item, f"no image id in column {id_col!r}"))
                    continue
                if recipe is not None:
                    try:
                        name = recipe.image_name(values, external_id)
                    except (KeyError, ValueError, IndexError):
                        name = ""
                    if name not in files and external_id in files:  # ids that already end in .jpg (a HAM copy)
                        name = external_id
                    file_path = files.get(name) or (base_dir / name if name else None)
                    if name and name in files and files[name] is None:
                        report.failed.append((item, f"{name} is in two folders under {base_dir}: keep one and import again"))
                        continue
                elif path_col and values.get(path_col, "").strip():
                    file_path, explicit_path = base_dir / values[path_col].strip(), True
                elif fitz17k and images_dir and external_id:
                    file_path = base_dir / f"{external_id}.jpg"
                elif url and images_dir:
                    file_path = base_dir / Path(urlsplit(url).path).name
                if file_path is not None and not inside(base_dir, file_path):
                    report.failed.append((item, f"the image path {OUTSIDE}; keep images inside the CSV's folder or --images-dir"))
                    continue

                existing = None
                if external_id and external_id in by_external:
                    image_id, status = by_external[external_id]
                    has_file = file_path is not None and file_path.exists()
                    if status == "image_missing" and has_file:
                        existing = session.get(Image, image_id)
                    elif has_file and not _is_stored_picture(wb, session.get(Image, image_id), file_path):
                        report.failed.append(
                            (
                                item,
                                f"id {external_id!r} of source {source_name!r} is image #{image_id}, with another picture: "
                                f"is this another source's file? Import it with its own --source NAME; nothing was changed",
                            )
                        )
                        continue
                    else:
                        report.already_present += 1
                        if status == "image_missing" and file_path is not None:  # still waiting for its file
                            still_missing += 1
                            if len(looked_for) < 5:
                                looked_for.append(file_path.name)
                        continue

                for message, kind in row_warnings:
                    report.warn(message, kind)
                meta = {**{k: v for k, v in values.items() if k not in used and v != ""}, **extra_meta}

                def make_row() -> Image:
                    image = Image(
                        source=source_name,
                        source_ref=str(file_path or url or ""),
                        url=url,
                        external_id=external_id,
                        source_label=label,
                        diagnosis_key=diagnosis_key,
                        fitzpatrick=fitzpatrick,
                        status="pending",
                        meta=meta,
                    )
                    if external_id:
                        session.add(ImageSource(image=image, source=source_name, external_id=external_id, **row_of))
                    return image

                row_of = {"source_label": label, "meta": meta}

                def link(holder: Image | int, external_id=external_id) -> None:
                    # a picture already stored, named by this source row too: the row is kept, beside it
                    at = {"image": holder} if isinstance(holder, Image) else {"image_id": holder}
                    session.add(ImageSource(**at, source=source_name, external_id=external_id, **row_of))

                # A file named in the CSV must exist; one derived from images_dir is used when present.
                if file_path is not None and (explicit_path or file_path.exists()):
                    try:
                        data, original_sha = read_image_file(wb, file_path)
                    except ImageRejected as e:
                        report.failed.append((item, f"{file_path}: {e}"))
                        continue
                    row = ingest_bytes(
                        wb, session, known, report, item, data, original_sha, make_row, existing, link if external_id else None
                    )
                    if row is not None and existing is None:
                        new_rows.append(row)
                    elif row is not None:
                        report.image_ids.append(row.id)
                else:
                    if file_path is not None and len(looked_for) < 5:
                        looked_for.append(file_path.name)
                    image = make_row()
                    image.status = "image_missing"
                    session.add(image)
                    new_rows.append(image)
                    report.missing_images += 1
            flush_new(session, report, new_rows)
            by_external.update((r.external_id, (r.id, r.status)) for r in new_rows if r.external_id)
    if recipe is not None and (not_found := report.missing_images + still_missing) and looked_for:
        report.warn(
            f"{not_found} images were not found under {base_dir} (looked for {', '.join(looked_for)}"
            f"{', ...' if not_found > len(looked_for) else ''}); they wait as image_missing: put them there "
            "(or name the folder with --images-dir) and import again",
            "images not found",
        )
    with wb.session() as session:
        audit.record(
            session,
            actor,
            "images.import_csv",
            "image",
            None,
            source=str(csv_path),
            summary=report.summary(),
            n_rows=n_rows,
        )
    return report
