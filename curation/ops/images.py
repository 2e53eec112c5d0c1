"""Store maintenance that is safe with several servers: `verify` reads every picture the database names back from the
image store (a folder or a bucket) and checks its sha256, changing nothing; `collect_garbage` removes pictures no
image row names once they are older than a grace period, so a picture an import on another server has written but
not yet committed (a batch commits in seconds to minutes) is never taken; `migrate_images` copies every picture
from one store to another (folder to bucket or back), resumable and checked."""

from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from curation.errors import ConfigError
from curation.store import audit
from curation.store.auth import Actor, require
from curation.store.db import Workbench
from curation.store.images import ImageMissing, open_image_store
from curation.store.models import Image
from schema.bucket import StoreUnavailable

VERIFY_THREADS = 8  # reads in flight: a bucket's latency, not the CPU, is what a check waits on


@dataclass(frozen=True)
class StoredImageProblem:
    image_id: int
    key: str
    problem: str  # "missing" or "corrupt: sha256 <first 12 hex digits>..."


@dataclass
class ImageCheck:
    store: str  # where the pictures were read from (ImageStore.describe: never a credential)
    checked: int = 0
    problems: list[StoredImageProblem] = field(default_factory=list)

    @property
    def missing(self) -> list[StoredImageProblem]:
        return [p for p in self.problems if p.problem == "missing"]

    @property
    def corrupt(self) -> list[StoredImageProblem]:
        return [p for p in self.problems if p.problem != "missing"]


def verify_images(wb: Workbench, actor: Actor) -> ImageCheck:
    """Every picture the database names, read back and hashed: what is missing or not what was stored."""
    require(actor, "admin", "verify the image store")
    with wb.session() as s:
        rows = s.execute(
            select(Image.id, Image.file_path, Image.sha256).where(Image.file_path.is_not(None)).order_by(Image.id)
        ).all()
    report = ImageCheck(store=wb.images.describe())

    def check(row) -> StoredImageProblem | None:
        image_id, key, sha = row
        try:
            digest = hashlib.sha256(wb.images.get(key)).hexdigest()
        except ImageMissing:
            return StoredImageProblem(image_id, key, "missing")
        return None if digest == sha else StoredImageProblem(image_id, key, f"corrupt: sha256 {digest[:12]}...")

    with ThreadPoolExecutor(max_workers=VERIFY_THREADS) as pool:
        for problem in pool.map(check, rows):
            report.checked += 1
            if problem is not None:
                report.problems.append(problem)
    with wb.session() as s:
        audit.record(
            s,
            actor,
            "images.verify",
            "image",
            None,
            checked=report.checked,
            missing=len(report.missing),
            corrupt=len(report.corrupt),
        )
    return report


DEFAULT_GRACE_HOURS = 24.0  # far past any import batch's commit; an import stalled longer than this has failed


@dataclass
class GarbageReport:
    store: str
    listed: int = 0  # pictures in the store
    unreferenced: int = 0  # named by no image row
    young: int = 0  # of those, inside the grace period: left alone
    removed: list[str] = field(default_factory=list)  # keys removed (or that would be, on a dry run)
    dry_run: bool = False


def _referenced_keys(wb: Workbench) -> set[str]:
    with wb.session() as s:
        return set(s.scalars(select(Image.file_path).where(Image.file_path.is_not(None))))


def collect_garbage(
    wb: Workbench, actor: Actor, *, grace_hours: float = DEFAULT_GRACE_HOURS, dry_run: bool = False
) -> GarbageReport:
    """Remove pictures that no image row names and that were written more than `grace_hours` ago.

    The store is listed before the database is read, and the database read again just before each removal, so
    a picture whose row another server commits meanwhile is kept. Writing a picture that is already there
    refreshes its age (FolderImageStore.put; a bucket's put_object rewrites it), so an import that meets an old
    unreferenced copy of its picture is covered by the grace period too."""
    require(actor, "admin", "clean the image store")
    if not grace_hours >= 1:
        raise ValueError(f"a grace period of {grace_hours} hours could take an import's pictures: give at least 1")
    report = GarbageReport(store=wb.images.describe(), dry_run=dry_run)
    objects = list(wb.images.objects())  # first: see the module docstring
    report.listed = len(objects)
    referenced = _referenced_keys(wb) if objects else set()
    unreferenced = [o for o in objects if o.key not in referenced]
    report.unreferenced = len(unreferenced)
    cutoff = datetime.now(UTC) - timedelta(hours=grace_hours)
    old = [o.key for o in unreferenced if o.modified < cutoff]
    report.young = len(unreferenced) - len(old)
    if old and not dry_run:
        # looked at again just before removing: written again since (an import that met it) or named by a row
        # committed since, a picture is kept
        ages = {o.key: o.modified for o in wb.images.objects()}
        still_unreferenced = set(old) - _referenced_keys(wb)
        for key in sorted(k for k in still_unreferenced if k in ages and ages[k] < cutoff):
            wb.images.delete(key)
            report.removed.append(key)
    elif old:
        report.removed = sorted(old)
    if not dry_run:
        with wb.session() as s:
            audit.record(
                s, actor, "images.gc", "image", None, removed=len(report.removed), young=report.young, grace_hours=grace_hours
            )
    return report


MIGRATE_THREADS = 16


@dataclass
class Migration:
    source: str  # ImageStore.describe() of both: never a credential
    target: str
    copied: int = 0
    already_there: int = 0  # a rerun skips these: the copy resumes
    problems: list[StoredImageProblem] = field(default_factory=list)  # missing or corrupt in the source: not copied


def migrate_images(wb: Workbench, actor: Actor, to: str) -> Migration:
    """Copy every picture the database names from the store in use into `to` (an s3://bucket/prefix URL, or
    "folder" for the folder under the workbench home), each checked against its sha256 before it is written
    and by its length after. Pictures already in the target with the right length are skipped, so a run cut
    off midway is finished by running it again. The source is left as it is: switch SKINFLOW_IMAGE_STORE on
    every server, then run this again to copy what imports added meanwhile (docs/deploy.md)."""
    require(actor, "admin", "migrate the image store")
    target = open_image_store(
        None if to.strip() == "folder" else to.strip(), wb.settings.store_dir, wb.settings.home / "cache" / "images"
    )
    if target.describe() == wb.images.describe():
        raise ConfigError(f"the image store is {target.describe()} already: name another one to migrate to")
    with wb.session() as s:
        rows = s.execute(
            select(Image.id, Image.file_path, Image.sha256).where(Image.file_path.is_not(None)).order_by(Image.id)
        ).all()
    report = Migration(source=wb.images.describe(), target=target.describe())

    def copy(row) -> str | StoredImageProblem:
        image_id, key, sha = row
        try:
            data = wb.images.get(key)
        except ImageMissing:
            return StoredImageProblem(image_id, key, "missing")
        if target.size(key) == len(data):
            return "there"
        digest = hashlib.sha256(data).hexdigest()
        if digest != sha:
            return StoredImageProblem(image_id, key, f"corrupt: sha256 {digest[:12]}...")
        target.put(key, data)
        if target.size(key) != len(data):
            raise StoreUnavailable(f"{target.describe()} did not keep {key} whole; run the migration again")
        return "copied"

    with ThreadPoolExecutor(max_workers=MIGRATE_THREADS) as pool:
        for outcome in pool.map(copy, rows):
            if isinstance(outcome, StoredImageProblem):
                report.problems.append(outcome)
            elif outcome == "there":
                report.already_there += 1
            else:
                report.copied += 1
    with wb.session() as s:
        audit.record(
            s,
            actor,
            "images.migrate",
            "image",
            None,
            to=report.target,
            copied=report.copied,
            already_there=report.already_there,
            problems=len(report.problems),
        )
    return report
