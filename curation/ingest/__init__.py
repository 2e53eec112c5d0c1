"""Getting images and their metadata into the workbench.

- `import_path`: the front door (`skinflow import`): a folder, a CSV file, a zip archive or one image;
- folder.py: folders and single files; csv_import.py: CSV files (generic and Fitzpatrick17k);
  archive.py: zip uploads; fetch.py: downloads of URL-only rows; demo_cases.py: the synthetic demo pictures
  and captions (curation/ops/demo.py builds the demo workbench from them);
- clean.py: what a stored image is (sniffed format, EXIF orientation applied, metadata removed);
- common.py: the report and the prepare / add-row halves every importer uses.

Rules: content-addressed (the same bytes are never stored twice; re-running an import adds nothing); the
format is sniffed from the content, never the extension; a bad file or row is reported with its reason
and skipped while the rest goes on.
"""

from __future__ import annotations

from pathlib import Path

from curation.errors import IngestError
from curation.ingest.archive import import_zip
from curation.ingest.bucket import import_bucket
from curation.ingest.common import ImportReport
from curation.ingest.csv_import import import_csv
from curation.ingest.folder import import_folder, import_image
from curation.store.auth import Actor
from curation.store.db import Workbench


def import_path(wb: Workbench, actor: Actor, path: Path | str, **options) -> ImportReport:
    """A folder, a CSV file, a zip, a single image file, or a folder in a bucket (s3://bucket/prefix/)."""
    if str(path).startswith("s3://"):
        if options.get("source") is not None or options.get("images_dir") or options.get("dataset", "auto") != "auto":
            raise IngestError("an s3:// folder imports its images (with --label-from-folder); CSV options do not apply")
        folder_label, progress = options.get("label_from_folder", False), options.get("progress")
        return import_bucket(wb, actor, str(path), label_from_folder=folder_label, progress=progress)
    path = Path(path).expanduser()
    is_csv = path.suffix.lower() in (".csv", ".tsv", ".txt") and not path.is_dir()
    if options.get("source") is not None and not is_csv:
        raise IngestError(f"--source names the source of a CSV's ids, and {path.name} is not a CSV: leave it out")
    if options.get("dataset", "auto") not in ("auto", "csv") and not is_csv:
        raise IngestError(
            f"--dataset reads a dataset's metadata CSV, and {path.name} is not one: "
            f"skinflow import METADATA.csv --dataset {options['dataset']} --images-dir {path}"
        )
    if path.is_dir():
        options.pop("images_dir", None)
        options.pop("dataset", None)
        return import_folder(wb, actor, path, **options)
    if not path.exists():
        raise IngestError(f"{path} does not exist")
    if path.suffix.lower() == ".zip":
        options.pop("images_dir", None)
        options.pop("dataset", None)
        return import_zip(wb, actor, path, **options)
    if is_csv:
        options.pop("label_from_folder", None)
        return import_csv(wb, actor, path, **options)
    return import_image(wb, actor, path)
