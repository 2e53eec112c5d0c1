"""Import image files: a folder (recursive; ImageFolder layout gives labels), or one file.

Files are prepared (read, hashed, decoded, cleaned, stored) on up to PREPARE_THREADS threads, since
decoding and hashing release the GIL, and rows are written on one, committed every FOLDER_BATCH files:
an interrupted import keeps finished batches and a re-run continues. Symlinked folders are not followed
(loops); hidden files and OS clutter are skipped.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path

from curation.errors import ImageRejected, IngestError
from curation.ingest.common import (
    OUTSIDE,
    ImportReport,
    KnownContent,
    Progress,
    add_prepared,
    flush_new,
    ingest_bytes,
    inside,
    prepare_path,
    read_image_file,
    start_import,
)
from curation.store import audit
from curation.store.auth import Actor
from curation.store.db import Workbench
from curation.store.models import Image

FOLDER_BATCH = 200
PREPARE_THREADS = 4  # decoding and hashing release the GIL: files are prepared in parallel
_SKIP_NAMES = {"thumbs.db", "desktop.ini"}


def skipped_name(name: str) -> bool:
    """Hidden files and the thumbnail caches file managers leave: never pictures of an import."""
    return name.startswith(".") or name.lower() in _SKIP_NAMES


def _walk_files(root: Path, report: ImportReport) -> Iterator[Path]:
    def on_error(error: OSError) -> None:
        report.failed.append((str(error.filename), f"cannot read folder: {error.strerror}"))

    for folder, dirs, files in os.walk(root, onerror=on_error, followlinks=False):
        dirs.sort()
        for d in dirs:
            if os.path.islink(os.path.join(folder, d)):
                report.warn(
                    f"{os.path.join(folder, d)}: symlinked folder not followed (avoids loops); import it directly",
                    "symlinked folder",
                )
        for name in sorted(files):
            if skipped_name(name):
                continue
            path = Path(folder) / name
            # a link is followed only to a file inside the imported folder (links within a photo library are
            # common; one to /home/someone/private.jpg is not an image of this import)
            if path.is_symlink() and not inside(root, path):
                report.failed.append((str(path), f"a link that {OUTSIDE}; import the folder it points into instead"))
                continue
            yield path


def import_folder(
    wb: Workbench, actor: Actor, root: Path, *, label_from_folder: bool = False, progress: Progress | None = None
) -> ImportReport:
    """Import every image under `root` (recursive). With label_from_folder, each image's parent
    folder name is its source label (ImageFolder layout: root/<label>/<image>)."""
    start_import(wb, actor, "import images")
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
            prepared = pool.map(partial(prepare_path, wb, frozen), batch)
            with wb.session() as session:
                new_rows: list[Image] = []
                for index, (path, ready) in enumerate(zip(batch, prepared, strict=True), start):
                    label = path.parent.name if label_from_folder and path.parent != root else None

                    def make_row(path=path, label=label) -> Image:
                        return Image(
                            source="folder",
                            source_ref=str(path.resolve()),
                            status="pending",
                            source_label=label,
                            diagnosis_key=wb.taxonomy.normalise(label) if label else None,
                            meta={"filename": path.name},
                        )

                    row = add_prepared(session, known, report, ready, make_row)
                    if row is not None:
                        new_rows.append(row)
                        if label and row.diagnosis_key is None:
                            report.warn(
                                f"{ready.item}: folder label {label!r} is not in the taxonomy; kept as free text",
                                "label kept as free text",
                            )
                    if progress:
                        progress(index + 1, len(files))
                new_ids = flush_new(session, report, new_rows)
                if new_ids:
                    audit.record(session, actor, "images.import", "image", None, source=str(root), image_ids=new_ids)
    if progress and not files:
        progress(0, 0)
    return report


def import_image(wb: Workbench, actor: Actor, path: Path) -> ImportReport:
    """One image file."""
    start_import(wb, actor, "import images")
    report = ImportReport()
    with wb.session() as session:
        known = KnownContent(session)
        try:
            data, original_sha = read_image_file(wb, path)
        except ImageRejected as e:
            report.failed.append((str(path), str(e)))
            return report
        row = ingest_bytes(
            wb,
            session,
            known,
            report,
            str(path),
            data,
            original_sha,
            lambda: Image(source="folder", source_ref=str(path.resolve()), status="pending", meta={"filename": path.name}),
        )
        if row is not None and flush_new(session, report, [row]):
            audit.record(session, actor, "images.import", "image", report.image_ids[0], source=str(path))
    return report
