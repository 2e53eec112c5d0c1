"""Import the images inside a zip archive (an upload from the Admin page). Every entry is checked before
anything is extracted; paths that escape the archive (zip-slip), links, too many entries and entries that
inflate implausibly (zip bomb) refuse the whole archive."""

from __future__ import annotations

import tempfile
import zipfile
from pathlib import Path, PurePosixPath

from curation.errors import IngestError
from curation.ingest.common import ImportReport, Progress, start_import
from curation.ingest.folder import import_folder
from curation.store.auth import Actor
from curation.store.db import Workbench
from schema.files import TEMP_PREFIX, temp_owner_tag

MAX_ZIP_ENTRIES = 100_000
MAX_ZIP_RATIO = 200  # a member that inflates more than this is a bomb, not a photo
MAX_ZIP_TOTAL_BYTES = 20_000_000_000  # all members inflated: bigger uploads go in as a server folder


def _check_layout(members: list[zipfile.ZipInfo]) -> None:
    """Refuse an archive whose entries cannot all be extracted side by side: the same path twice, or a file
    and a folder of the same name (extraction crashed on it)."""
    files: set[PurePosixPath] = set()
    folders: set[PurePosixPath] = set()
    for member in members:
        path = _safe_member_path(member.filename)
        if path in files:
            raise IngestError(f"refused: the archive holds {member.filename!r} twice; nothing was imported")
        files.add(path)
        folders.update(path.parents)
    clash = sorted(str(p) for p in files & folders)
    if clash:
        raise IngestError(f"refused: the archive has a file and a folder both named {clash[0]!r}; nothing was imported")


MAX_NAME_BYTES = 255  # one file or folder name (the file system's limit: longer crashed the extraction)
MAX_PATH_BYTES = 4096
READABLE_METHODS = {zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA}


def _safe_member_path(name: str) -> PurePosixPath:
    path = PurePosixPath(name.replace("\\", "/"))
    if path.is_absolute() or ".." in path.parts or (path.parts and path.parts[0].endswith(":")):
        raise IngestError(f"refused: the archive entry {name!r} points outside the archive (zip-slip); nothing was imported")
    shown = name[:80] + ("..." if len(name) > 80 else "")
    if len(name.encode("utf-8", "surrogateescape")) > MAX_PATH_BYTES:
        raise IngestError(f"refused: the archive entry {shown!r} has a path over {MAX_PATH_BYTES} bytes; nothing was imported")
    if any(len(part.encode("utf-8", "surrogateescape")) > MAX_NAME_BYTES for part in path.parts):
        raise IngestError(f"refused: the archive entry {shown!r} has a name over {MAX_NAME_BYTES} bytes; nothing was imported")
    return path


def _check_readable(member: zipfile.ZipInfo) -> None:
    if member.flag_bits & 0x1:
        raise IngestError(
            f"refused: the archive entry {member.filename[:80]!r} is encrypted; zip the images without a password; "
            "nothing was imported"
        )
    if member.compress_type not in READABLE_METHODS:
        raise IngestError(
            f"refused: the archive entry {member.filename[:80]!r} uses compression method {member.compress_type}, which "
            "cannot be read; zip the images with plain deflate; nothing was imported"
        )


def import_zip(
    wb: Workbench, actor: Actor, archive: Path, *, label_from_folder: bool = False, progress: Progress | None = None
) -> ImportReport:
    """Import the images inside a zip (an upload from the app). Every entry is checked before
    anything is extracted: paths that escape the archive (zip-slip), links, too many entries and
    entries that inflate implausibly (zip bomb) refuse the whole archive."""
    start_import(wb, actor, "import images")
    max_bytes = int(wb.settings.max_image_mb * 1e6)
    try:
        with zipfile.ZipFile(archive) as bundle:
            members = [m for m in bundle.infolist() if not m.is_dir()]
            if len(members) > MAX_ZIP_ENTRIES:
                raise IngestError(f"refused: the archive has {len(members)} files, over {MAX_ZIP_ENTRIES}; split it")
            for member in members:
                _safe_member_path(member.filename)
                _check_readable(member)
                if (member.external_attr >> 16) & 0o170000 == 0o120000:
                    raise IngestError(f"refused: the archive entry {member.filename!r} is a symbolic link; nothing was imported")
                if member.file_size > max_bytes or member.file_size > max(member.compress_size, 1) * MAX_ZIP_RATIO:
                    raise IngestError(
                        f"refused: the archive entry {member.filename!r} inflates to {member.file_size / 1e6:.0f} MB "
                        "(zip-bomb guard); nothing was imported"
                    )
            _check_layout(members)
            declared = sum(m.file_size for m in members)
            if declared > MAX_ZIP_TOTAL_BYTES:
                raise IngestError(
                    f"refused: the archive inflates to {declared / 1e9:.1f} GB, over {MAX_ZIP_TOTAL_BYTES / 1e9:.0f} GB; "
                    "import large sets as a folder on the server; nothing was imported"
                )
            # extracted inside the workbench (owner-only, swept by `doctor --fix` if killed), not in a shared /tmp
            with tempfile.TemporaryDirectory(prefix=f"{TEMP_PREFIX}{temp_owner_tag()}zip", dir=wb.settings.home) as folder:
                root = Path(folder)
                inflated = 0
                for member in members:
                    target = root / _safe_member_path(member.filename)
                    target.parent.mkdir(parents=True, exist_ok=True)
                    with bundle.open(member) as source, target.open("wb") as sink:
                        copied = 0
                        for block in iter(lambda: source.read(1 << 20), b""):
                            copied += len(block)
                            inflated += len(block)
                            if inflated > MAX_ZIP_TOTAL_BYTES:
                                raise IngestError(
                                    f"refused: the archive inflates past {MAX_ZIP_TOTAL_BYTES / 1e9:.0f} GB; nothing was imported"
                                )
                            if copied > max_bytes:  # sizes in the directory can lie
                                raise IngestError(
                                    f"refused: {member.filename!r} is larger than its archive entry says; nothing was imported"
                                )
                            sink.write(block)
                return import_folder(wb, actor, root, label_from_folder=label_from_folder, progress=progress)
    except (zipfile.BadZipFile, NotImplementedError, RuntimeError, EOFError) as e:  # what zipfile raises on bad input
        raise IngestError(f"{Path(archive).name} is not a readable zip archive ({e}); nothing was imported") from None
