"""Reading a CSV of images and metadata, with no database: the file parsed once (refused whole when it is not
UTF-8 CSV), a column layout chosen once from its header (generic columns, the Fitzpatrick17k CSV, or a public
dataset's recipe from curation/ingest/datasets.py), and a pure parser from one row to an image's fields and file.

curation/ingest/csv_import.py stores what this reads.
"""

from __future__ import annotations

import csv
import io
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from curation.errors import IngestError
from curation.ingest.common import OUTSIDE, inside
from curation.ingest.datasets import DatasetRecipe, DatasetRecipeError, dataset_recipes, detect_recipe, recipe_named
from schema import Taxonomy
from schema.bucket import S3_SCHEME, split_address
from schema.files import FORMULA_START

MAX_CSV_COLUMNS = 256  # public dermatology sets have under 40; a 200,000-column row is an attack, not data
MAX_METADATA_CHARS = 16_000  # per row, names and values of the columns kept as metadata
_PATH_COLUMNS = ("path", "image", "image_path", "file", "filename", "file_path")
_URL_COLUMNS = ("url", "image_url")
_LABEL_COLUMNS = ("label", "diagnosis", "diagnosis_label")
_FITZ_COLUMNS = ("fitzpatrick", "fitzpatrick_scale", "fitzpatrick_type", "skin_type")
_FITZ_REQUIRED = {"md5hash", "label", "fitzpatrick_scale", "url"}
_ROMAN = {"i": 1, "ii": 2, "iii": 3, "iv": 4, "v": 5, "vi": 6}
_SOURCE_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]{0,31}")
_RESERVED_SOURCES = {"folder", "synthetic", "fitzpatrick17k", "upload", "zip", "bucket"}


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


@dataclass(frozen=True)
class CsvLayout:
    """How to read one CSV, chosen once from its header: which columns hold what, and by which recipe."""

    csv_path: Path
    base_dir: Path  # where relative paths and a recipe's file names are looked up
    images_dir: Path | None
    source_name: str
    recipe: DatasetRecipe | None
    fitz17k: bool
    path_col: str | None
    url_col: str | None
    label_col: str | None
    fitz_col: str | None
    id_col: str | None
    files: dict[str, Path | None]  # a recipe's images by file name (see _files_by_name)

    @property
    def used(self) -> set[str]:
        """Columns read into fields of their own; every other column is kept as metadata."""
        return {c for c in (self.path_col, self.url_col, self.label_col, self.fitz_col) if c}


def choose_layout(header: list[str], csv_path: Path, *, images_dir: Path | None, dataset: str, source: str | None) -> CsvLayout:
    """The layout of a CSV with this header, or IngestError saying what it lacks."""
    recipe = _choose_recipe(dataset, header, csv_path)
    fitz17k = recipe is None and _FITZ_REQUIRED <= set(header)
    url_col = _pick(header, _URL_COLUMNS)
    if recipe is not None:
        path_col, label_col, fitz_col, id_col = None, recipe.label_column, recipe.fitzpatrick_column, recipe.id_column(header)
    else:
        path_col, label_col, fitz_col = _pick(header, _PATH_COLUMNS), _pick(header, _LABEL_COLUMNS), _pick(header, _FITZ_COLUMNS)
        id_col = "md5hash" if fitz17k else _pick(header, ("id", "image_id"))
    if not (path_col or url_col or recipe):
        known = detect_recipe(header)
        hint = f" It looks like {known.title} metadata: import it with --dataset {known.name}." if known else ""
        raise IngestError(
            f"{csv_path.name}: no image column. Found columns {header}; need 'path' (file relative to the CSV) "
            f"or 'url', plus optional 'label', 'fitzpatrick', 'id'. Nothing was imported.{hint}"
        )
    base_dir = Path(images_dir) if images_dir else csv_path.parent
    return CsvLayout(
        csv_path=csv_path,
        base_dir=base_dir,
        images_dir=Path(images_dir) if images_dir else None,
        source_name=_source_name(source, recipe, fitz17k, csv_path),
        recipe=recipe,
        fitz17k=fitz17k,
        path_col=path_col,
        url_col=url_col,
        label_col=label_col,
        fitz_col=fitz_col,
        id_col=id_col,
        files=_files_by_name(base_dir) if recipe is not None and base_dir.is_dir() else {},
    )


class RowRefused(ValueError):
    """A CSV row that cannot be imported as it is; the message says why, for the import report."""


@dataclass
class CsvRow:
    """One CSV row read into the fields of an image (no database; no file is read)."""

    item: str  # "<file> line N": how the report names the row
    values: dict[str, str]  # the cells by column
    external_id: str | None
    url: str | None
    label: str | None
    diagnosis_key: str | None
    fitzpatrick: int | None
    meta: dict[str, str]
    warnings: list[tuple[str, str]]  # (message, kind): reported once the row is imported, not again on every rerun
    file_path: Path | None = None
    explicit_path: bool = False  # named in the CSV, so it must exist (a derived name is used when present)
    object_url: str | None = None  # the picture is an object in a bucket: s3://bucket/key in the path or url column


def _cell(values: dict[str, str], column: str | None) -> str | None:
    return ((values.get(column) or "").strip() or None) if column else None


def _fitzpatrick(layout: CsvLayout, values: dict[str, str], extra_meta: dict[str, str]) -> int | None:
    """The row's Fitzpatrick type; a recipe that records skin tone in bands keeps the band as metadata instead."""
    recipe, column = layout.recipe, layout.fitz_col
    if not column:
        return None
    if recipe is None or not recipe.fitzpatrick_bands:
        return parse_fitzpatrick(values.get(column))
    if band := values.get(column, "").strip():
        if band not in recipe.fitzpatrick_bands:
            raise ValueError(f"skin tone {band!r} is not one of {', '.join(recipe.fitzpatrick_bands)}")
        extra_meta["fitzpatrick_band"] = recipe.fitzpatrick_bands[band]
    return None


def _recipe_label(recipe: DatasetRecipe, taxonomy: Taxonomy, row: CsvRow, extra_meta: dict[str, str]) -> str | None:
    """A recipe row's label through its crosswalk: the taxonomy key, with what the code means kept as metadata."""
    mapped = recipe.map_label(row.label, taxonomy)
    if mapped.group9 and mapped.key is None:  # a code spanning several labels: the group; the code stays the source label
        extra_meta.update(label_group9=mapped.group9, label_group3=mapped.group3)
    if mapped.note:
        extra_meta["label_meaning"] = mapped.note
    if mapped.key is None and not mapped.group9 and (group3 := recipe.row_group3(row.values)):
        extra_meta["label_group3"] = group3  # the row's own truth when its code maps to nothing
    if provenance := recipe.provenance(row.values):
        extra_meta["label_provenance"] = provenance  # what `verify --where` and the card count by
    if not mapped.known and mapped.key is None:
        row.warnings.append(
            (
                f"{row.item}: label {row.label!r} is not in the {recipe.name} crosswalk; kept as free text",
                "label kept as free text",
            )
        )
    return mapped.key


def parse_row(layout: CsvLayout, taxonomy: Taxonomy, item: str, cells: dict) -> CsvRow:
    """Read one CSV row (as csv.DictReader gives it) into an image's fields; RowRefused says why it cannot be."""
    if None in cells:
        raise RowRefused("more cells than header columns; check quoting")
    values = {k: (v if isinstance(v, str) else "") for k, v in cells.items()}
    used = layout.used
    meta_chars = sum(len(k) + len(v) for k, v in values.items() if k not in used)
    if meta_chars > MAX_METADATA_CHARS:  # shown with the image on every rerun of the Annotate page
        raise RowRefused(f"{meta_chars:,} characters of metadata, over {MAX_METADATA_CHARS:,}: shorten or drop columns")
    warnings = [
        (f"{item}: cell {column!r} starts with {value[:1]!r} (spreadsheet formula); stored as plain text", "formula cell")
        for column, value in values.items()
        if value.startswith(FORMULA_START) and not _is_number(value)
    ]
    extra_meta: dict[str, str] = {}
    try:
        fitzpatrick = _fitzpatrick(layout, values, extra_meta)
    except ValueError as e:
        raise RowRefused(str(e)) from None
    recipe = layout.recipe
    external_id = _cell(values, layout.id_col)
    if recipe is not None and external_id is None:  # an empty image_name beside isic_id: the next id column
        external_id = next((values[c].strip() for c in recipe.id_columns if (values.get(c) or "").strip()), None)
    url, label = _cell(values, layout.url_col), _cell(values, layout.label_col)
    row = CsvRow(
        item,
        values,
        external_id or url or object_address(layout, values),  # no id: the row is known by where its picture is
        url,
        label,
        taxonomy.normalise(label) if label else None,
        fitzpatrick,
        {},
        warnings,
    )
    if recipe is not None:  # what a row carries whatever its label
        scope = (values.get(recipe.lesion_scope) or "").strip() if recipe.lesion_scope else ""
        if scope and (lesion := (values.get("lesion_id") or "").strip()):
            extra_meta.update(lesion_id=f"{scope}/{lesion}", source_lesion_id=lesion)
        if recipe.license_column and (license_ := (values.get(recipe.license_column) or "").strip()):
            extra_meta["image_license"] = license_  # carried into exports and counted on the card
        if label:
            row.diagnosis_key = _recipe_label(recipe, taxonomy, row, extra_meta)
    elif label and row.diagnosis_key is None:
        warnings.append(
            (f"{item}: label {label!r} is not in the taxonomy; kept as free text (fix it in review)", "label kept as free text")
        )
    row.meta = {**{k: v for k, v in values.items() if k not in used and v != ""}, **extra_meta}
    return row


def object_address(layout: CsvLayout, values: dict[str, str]) -> str | None:
    """The s3:// address a generic CSV row names in its path column (or else its url column), if any."""
    for column in (layout.path_col, layout.url_col):
        cell = _cell(values, column) if layout.recipe is None else None
        if cell and cell.startswith(S3_SCHEME):
            return cell
    return None


def locate_file(layout: CsvLayout, row: CsvRow) -> None:
    """Set the row's image file: an object in a bucket, named in the CSV, found by a recipe's file name, or derived
    from its id or url. RowRefused when it cannot be (a recipe row without an id, a name in two folders, a path
    outside the folder, an s3:// address that is not a bucket and a key)."""
    base_dir, recipe, external_id, values = layout.base_dir, layout.recipe, row.external_id, row.values
    if (address := object_address(layout, values)) is not None:
        split = split_address(address)
        if split is None or not split[1] or split[1].endswith("/"):
            raise RowRefused(
                f"{address[:100]!r} is not an s3://bucket/key address of one object (a bucket name is 3-63 lowercase "
                "letters, digits, '.' or '-'; a key holds no control characters)"
            )
        row.object_url = address
    elif recipe is not None:
        if not external_id:
            raise RowRefused(f"no image id in column {layout.id_col!r}")
        try:
            name = recipe.image_name(values, external_id)
        except (KeyError, ValueError, IndexError):
            name = ""
        files = layout.files
        if name not in files and external_id in files:  # ids that already end in .jpg (a HAM copy)
            name = external_id
        if name and name in files and files[name] is None:
            raise RowRefused(f"{name} is in two folders under {base_dir}: keep one and import again")
        row.file_path = files.get(name) or (base_dir / name if name else None)
    elif layout.path_col and values.get(layout.path_col, "").strip():
        row.file_path, row.explicit_path = base_dir / values[layout.path_col].strip(), True
    elif layout.fitz17k and layout.images_dir and external_id:
        row.file_path = base_dir / f"{external_id}.jpg"
    elif row.url and layout.images_dir:
        row.file_path = base_dir / Path(urlsplit(row.url).path).name
    if row.file_path is not None and not inside(base_dir, row.file_path):
        raise RowRefused(f"the image path {OUTSIDE}; keep images inside the CSV's folder or --images-dir")
