"""The content-addressed image store and safe file writing.

Stored images are named by the sha256 of their bytes: `<store>/<sha[:2]>/<sha>.<ext>`, written atomically
(a temp file in the same folder, then a rename). Temp names carry the writer's host and pid, so a later
run can remove what a killed writer left and leave a live writer's files alone. What a stored image
contains is curation/ingest/clean.py's business.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import socket
import time
from pathlib import Path

from curation.errors import ImageRejected
from curation.store.images import ImageStore
from schema.files import TEMP_PREFIX


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read_limited(path: Path, max_bytes: int) -> bytes:
    """The file's bytes, refusing files over max_bytes before reading them."""
    size = path.stat().st_size
    if size > max_bytes:
        raise ImageRejected(f"file is {size / 1e6:.1f} MB, over the {max_bytes / 1e6:.0f} MB limit (setting max_image_mb)")
    if size == 0:
        raise ImageRejected("empty file (0 bytes)")
    return path.read_bytes()


def store_path(sha256: str, ext: str) -> str:
    """Path of a stored file relative to the store."""
    return f"{sha256[:2]}/{sha256}.{ext}"


# A leftover whose writer we cannot check (another host sharing the store) is removed after this long.
TEMP_MAX_AGE_S = 24 * 3600
_TEMP_OWNER = re.compile(r"^(?P<host>.+)-(?P<pid>\d+)-[^-]*$")


def _writer_is_gone(path: Path, prefix: str) -> bool:
    owner = _TEMP_OWNER.match(path.name.removeprefix(prefix).split(".")[0])
    if owner and owner["host"] == socket.gethostname():
        try:
            os.kill(int(owner["pid"]), 0)
        except ProcessLookupError:
            return True
        except PermissionError:  # alive, someone else's
            return False
        else:
            return False
    try:
        return time.time() - path.stat().st_mtime > TEMP_MAX_AGE_S
    except FileNotFoundError:
        return False


def sweep_leftovers(paths, prefix: str) -> int:
    """Remove temp files/folders (named `prefix` + temp_owner_tag() + ...) whose writer was killed;
    returns how many. Live writers' temp files are left alone, so this is safe next to a running import."""
    removed = 0
    for path in paths:
        if not path.name.startswith(prefix) or not _writer_is_gone(path, prefix):
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        removed += 1
    return removed


def sweep_store(store_dir: Path) -> int:
    """Temp files left in the image store by a killed import (called when an import starts)."""
    return sweep_leftovers(store_dir.glob(f"*/{TEMP_PREFIX}*"), TEMP_PREFIX) if store_dir.is_dir() else 0


def store_image(images: ImageStore, data: bytes, ext: str, digest: str | None = None) -> tuple[str, str]:
    """Write a clean image's bytes into the store (once per content); returns (sha256, relative path)."""
    digest = digest or sha256_hex(data)
    relative = store_path(digest, ext)
    images.put(relative, data)
    return digest, relative
