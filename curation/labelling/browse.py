"""Browsing the dataset: the filterable, sortable image table, thumbnails (cached on disk), and an image's full
history (imports, drafts, annotation versions, reviews), for the Dataset page and the CLI."""

from __future__ import annotations

import io
from typing import Any

from PIL import Image as PILImage
from sqlalchemy import String, and_, cast, exists, func, or_, select

from curation.errors import NotFound
from curation.labelling.review import images_in_disagreement
from curation.store.auth import Actor, require
from curation.store.db import Workbench
from curation.store.images import ImageMissing
from curation.store.models import (
    Annotation,
    AuditEvent,
    Draft,
    Image,
    Review,
    User,
)
from schema.files import write_atomic
from schema.fitzpatrick import BAND_TYPES, band_of

SORTS = {
    "id": Image.id,
    "status": Image.status,
    "label": Image.diagnosis_key,
    "fitzpatrick": Image.fitzpatrick,
    "source": Image.source,
}


def thumbnail(wb: Workbench, image_id: int, size: int = 160) -> bytes | None:
    """A small JPEG of a stored image, cached on disk next to the store (thumbs/); None when it has no picture or
    its picture is missing from the store."""
    with wb.session() as s:
        row = s.execute(select(Image.sha256, Image.file_path).where(Image.id == image_id)).first()
    if row is None or row.file_path is None:
        return None
    cached = wb.settings.home / "thumbs" / f"{row.sha256}_{size}.jpg"
    if cached.exists():
        return cached.read_bytes()
    try:
        with PILImage.open(wb.images.local_path(row.file_path)) as img:
            img.thumbnail((size, size))
            buffer = io.BytesIO()
            img.convert("RGB").save(buffer, "JPEG", quality=80)
    except (ImageMissing, FileNotFoundError):  # gone from the store: the table shows no picture for it
        return None
    write_atomic(cached, buffer.getvalue())
    return buffer.getvalue()


def list_images(
    wb: Workbench,
    actor: Actor,
    *,
    status: list[str] | None = None,
    label: list[str] | None = None,
    group9: list[str] | None = None,
    group3: list[str] | None = None,
    fitzpatrick: list[int] | None = None,
    annotator: list[str] | None = None,
    flag: list[str] | None = None,
    source: list[str] | None = None,
    disagreement: bool = False,
    image_id: int | None = None,
    sort: str = "id",
    descending: bool = False,
    limit: int = 50,
    offset: int = 0,
) -> tuple[list[dict[str, Any]], int]:
    """One page of the dataset table and the total count under the filters. `disagreement`: only images whose
    annotators' current annotations disagree (as Review decides); `image_id`: that image only."""
    require(actor, "reviewer", "browse the dataset")
    taxonomy = wb.taxonomy
    conditions = []
    if image_id is not None:
        conditions.append(Image.id == image_id)
    if disagreement:
        conditions.append(Image.id.in_(sorted(images_in_disagreement(wb))))
    if status:
        conditions.append(Image.status.in_(status))
    if label:
        conditions.append(Image.diagnosis_key.in_(label))
    groups = set()
    if group9:
        groups |= {k for k, l in taxonomy.labels.items() if l.group9 in group9}
    if group3:
        in3 = {k for k, l in taxonomy.labels.items() if l.group3 in group3}
        groups = (groups & in3) if group9 else in3
    if group9 or group3:
        conditions.append(Image.diagnosis_key.in_(sorted(groups)))
    if fitzpatrick:
        # an image known only by band (DDI V-VI) matches when every type of its band is asked for
        bands = [band for band, types in BAND_TYPES.items() if set(types) <= set(fitzpatrick)]
        banded = and_(Image.fitzpatrick.is_(None), Image.meta["fitzpatrick_band"].as_string().in_(bands))
        conditions.append(or_(Image.fitzpatrick.in_(fitzpatrick), banded) if bands else Image.fitzpatrick.in_(fitzpatrick))
    if source:
        conditions.append(Image.source.in_(source))
    if annotator:
        conditions.append(
            exists().where(Annotation.image_id == Image.id, Annotation.user_id == User.id, User.username.in_(annotator))
        )
    if flag:
        flagged = [cast(Annotation.quality_flags, String).like(f'%"{f}"%') for f in flag]
        conditions.append(exists().where(Annotation.image_id == Image.id, or_(*flagged)))
    order = SORTS.get(sort, Image.id)
    with wb.session() as s:
        total = s.scalar(select(func.count(Image.id)).where(*conditions)) or 0
        images = s.scalars(
            select(Image).where(*conditions).order_by(order.desc() if descending else order, Image.id).limit(limit).offset(offset)
        ).all()
        ids = [i.id for i in images]
        people: dict[int, set[str]] = {i: set() for i in ids}
        flags: dict[int, set[str]] = {i: set() for i in ids}
        for image_id, username, quality in s.execute(
            select(Annotation.image_id, User.username, Annotation.quality_flags)
            .join(User, User.id == Annotation.user_id)
            .where(Annotation.image_id.in_(ids))
        ):
            people[image_id].add(username)
            flags[image_id].update(quality or [])
        rows = []
        for image in images:
            known = taxonomy.labels.get(image.diagnosis_key) if image.diagnosis_key else None
            rows.append(
                {
                    "id": image.id,
                    "status": image.status,
                    "label": known.display if known else (image.source_label or ""),
                    "group9": known.group9 if known else None,
                    "group3": known.group3 if known else None,
                    "fitzpatrick": image.fitzpatrick,
                    "fitzpatrick_band": band_of(image.fitzpatrick) or (image.meta or {}).get("fitzpatrick_band"),
                    "annotators": sorted(people[image.id]),
                    "flags": sorted(flags[image.id]),
                    "source": image.source,
                }
            )
    return rows, total


def image_history(wb: Workbench, actor: Actor, image_id: int) -> list[dict[str, Any]]:
    """Every draft, annotation version, review and audit event of an image, oldest first."""
    require(actor, "reviewer", "see image histories")
    with wb.session() as s:
        if s.get(Image, image_id) is None:
            raise NotFound(f"no image #{image_id}")
        events: list[dict[str, Any]] = []
        for d in s.scalars(select(Draft).where(Draft.image_id == image_id)):
            events.append(
                {
                    "when": d.created_at,
                    "who": d.producer,
                    "what": f"draft ({d.kind})",
                    "details": d.error or ", ".join(f"{k}" for k, v in (d.caption or {}).items() if v),
                }
            )
        annotations = s.scalars(select(Annotation).where(Annotation.image_id == image_id)).all()
        for a in annotations:
            events.append(
                {
                    "when": a.created_at,
                    "who": a.user.username,
                    "what": f"annotation v{a.version}",
                    "details": f"diagnosis {a.diagnosis_key or a.diagnosis_text or '-'} ({a.diagnosis_status})",
                }
            )
        annotation_ids = [a.id for a in annotations]
        for r, reviewer in s.execute(
            select(Review, User.username)
            .join(User, User.id == Review.reviewer_id)
            .where(Review.annotation_id.in_(annotation_ids))
        ):
            events.append(
                {
                    "when": r.created_at,
                    "who": reviewer,
                    "what": f"review: {r.decision}",
                    "details": f"annotation #{r.annotation_id} {r.comment or ''}".strip(),
                }
            )
        audit = s.scalars(
            select(AuditEvent).where(
                or_(
                    (AuditEvent.entity == "image") & (AuditEvent.entity_id == image_id),
                    (AuditEvent.entity == "annotation") & AuditEvent.entity_id.in_(annotation_ids),
                ),
            )
        ).all()
        for e in audit:
            events.append({"when": e.created_at, "who": e.username, "what": f"audit: {e.action}", "details": ""})
    return sorted(events, key=lambda e: (str(e["when"]), e["what"]))
