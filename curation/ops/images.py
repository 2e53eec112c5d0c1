"""Store maintenance that is safe with several servers: `verify` reads every picture the database names back from the
image store (a folder or a bucket) and checks its sha256; nothing is changed, so it can run beside imports."""

from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from sqlalchemy import select

from curation.store import audit
from curation.store.auth import Actor, require
from curation.store.db import Workbench
from curation.store.images import ImageMissing
from curation.store.models import Image

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
