"""Read models for the app's pages: what one image looks like to an annotator, the dataset table,
and an image's full history; the pages call these instead of touching the database. Reads, with one write:
image_detail makes the image's routed draft (and its audit event) when the current evidence has none yet."""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image as PILImage
from sqlalchemy import String, and_, cast, exists, func, or_, select

from curation.assist.routing import ensure_routed_draft
from curation.errors import NotFound
from curation.labelling.annotate import annotation_dict, user_chain_head
from curation.labelling.review import images_in_disagreement
from curation.store.auth import Actor, require
from curation.store.db import Workbench
from curation.store.models import (
    DIAGNOSING_KINDS,
    LESION_COLUMNS,
    NEEDS_WORK_STATUSES,
    Annotation,
    AuditEvent,
    Draft,
    DraftKind,
    Image,
    Review,
    SavedWork,
    User,
)
from schema.caption import Caption
from schema.compare import caption_scores
from schema.fields import FIELD_KEYS
from schema.files import write_atomic
from schema.fitzpatrick import BAND_TYPES, band_of

# the best available draft prefills the form: the routed one (each field from its best source) when there is one
HIDDEN_META = ("true_caption",)  # synthetic ground truth: never shown to annotators
SORTS = {
    "id": Image.id,
    "status": Image.status,
    "label": Image.diagnosis_key,
    "fitzpatrick": Image.fitzpatrick,
    "source": Image.source,
}


@dataclass
class ImageDetail:
    id: int
    path: Path | None
    width: int | None
    height: int | None
    status: str
    source: str
    source_ref: str
    source_label: str | None
    diagnosis_key: str | None
    diagnosis_display: str | None
    group9: str | None
    group3: str | None
    fitzpatrick: int | None
    meta: dict[str, Any]
    drafts: list[dict[str, Any]] = field(default_factory=list)  # usable drafts, best first
    disagreements: list[str] = field(default_factory=list)  # fields where the two best drafts differ
    current: dict[str, Any] | None = None  # this user's latest annotation version
    saved_work: dict[str, Any] | None = None
    # ranked diagnosis keys offered as one-click choices: model suggestion first, then the LLM draft; from
    # every draft with diagnoses, including a suggestion whose caption could not be read
    suggested_diagnoses: dict[str, float] = field(default_factory=dict)  # key -> probability, best first

    @property
    def source_group(self) -> str | None:
        """The group the source label names when it names no single label ("benign epidermal / benign")."""
        return f"{self.group9} / {self.group3}" if self.group9 and not self.diagnosis_key else None


@dataclass(frozen=True, kw_only=True)
class PrefillSource:
    """One thing the Annotate form can start from. `token` names it in widget keys, so a form never keeps
    values that came from another source; `form` is a whole earlier form (saved work or a submitted version)."""

    label: str
    token: str
    caption: dict[str, Any] | None = None
    draft_id: int | None = None
    form: dict[str, Any] | None = None
    fields: dict[str, str] | None = None  # for the routed draft: the source each field came from
    notes: dict[str, str] | None = None  # what salvage changed or dropped in the draft, per field


def prefill_sources(detail: ImageDetail) -> list[PrefillSource]:
    """What the form can be prefilled from, best first: the user's saved work, their submitted version, the
    usable drafts (model suggestion, LLM, synthetic), empty."""
    sources = []
    if detail.saved_work:
        sources.append(
            PrefillSource(
                label="your saved draft",
                token="saved",
                caption=detail.saved_work.get("caption"),
                draft_id=detail.saved_work.get("draft_id"),
                form=detail.saved_work,
            )
        )
    if detail.current:
        # a stable token: if someone edits the annotation meanwhile, the open form must keep the user's edits
        sources.append(
            PrefillSource(
                label=f"your submitted version {detail.current['version']}",
                token="current",
                caption=detail.current["caption"],
                form=detail.current,
            )
        )
    sources += [
        PrefillSource(
            label=d["label"],
            # stable for the routed draft: a newer evidence snapshot re-routes it, and an open form keeps its edits
            token="routed" if d["kind"] == "routed" else f"d{d['id']}",
            caption=d["caption"],
            draft_id=d["id"],
            fields=d["fields"],
            notes=d["notes"],
        )
        for d in detail.drafts
    ]
    sources.append(PrefillSource(label="empty", token="empty"))
    return sources


def draft_dict(draft: Draft) -> dict[str, Any]:
    return {
        "id": draft.id,
        "kind": draft.kind,
        "producer": draft.producer,
        "version": draft.version,
        "caption": draft.caption,
        "diagnoses": list(draft.diagnoses or []),
        "created_at": draft.created_at,
        "label": "best source per field" if draft.kind == "routed" else f"{draft.kind}: {draft.producer} {draft.version}",
        "fields": (draft.meta or {}).get("fields") if draft.kind == "routed" else None,  # field -> the source it came from
        "notes": salvage_by_field((draft.meta or {}).get("salvage")),
    }


def salvage_by_field(notes: list[dict[str, str]] | None) -> dict[str, str]:
    """A draft's salvage notes (curation/assist/salvage.py) as one line per form field: the measurement's go with `size`,
    keys that are not fields under "" (shown above the form)."""
    out: dict[str, list[str]] = {}
    for note in notes or []:
        field = {"size_mm": "size"}.get(note.get("field", ""), note.get("field", ""))
        field = field if field in FIELD_KEYS else ""
        action = note.get("action") if note.get("action") in ("changed", "dropped", "ignored") else "noted"
        out.setdefault(field, []).append(
            f"{note.get('field')} {action} (was {note.get('original', '')}): {note.get('reason', '')}"
        )
    return {field: "; ".join(lines) for field, lines in out.items()}


def rank_drafts(drafts: list[Draft]) -> list[Draft]:
    """Usable drafts (a caption, no error), best first in DraftKind's order (routed > model > LLM > synthetic),
    newest first."""
    usable = [d for d in drafts if d.caption is not None and not d.error]
    return sorted(usable, key=lambda d: (DraftKind(d.kind).rank, -d.id))


def _suggested_diagnoses(drafts: list[Draft], k: int = 6) -> dict[str, float]:
    """Up to k suggested diagnoses, best first, each with its probability as the source that ranked it first gives
    it (a routed draft's merged votes are shares of its total, so they read as probabilities too)."""
    newest: dict[str, Draft] = {}
    for d in sorted(drafts, key=lambda d: d.id):
        if d.kind in DIAGNOSING_KINDS and d.diagnoses:
            newest[d.kind] = d
    out: dict[str, float] = {}
    for kind in DIAGNOSING_KINDS:  # routed first: every source's diagnoses merged by held-out accuracy
        if kind not in newest:
            continue
        entries = [e for e in newest[kind].diagnoses if e.get("key")]
        total = sum(float(e.get("score") or 0.0) for e in entries) if kind == DraftKind.ROUTED else 1.0
        for entry in entries[:k]:
            out.setdefault(entry["key"], float(entry.get("score") or 0.0) / (total or 1.0))
    return dict(list(out.items())[:k])


def field_disagreements(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    scores = caption_scores(Caption.model_validate(a), Caption.model_validate(b))
    return [key for key, score in scores.items() if score < 1.0]


def image_detail(wb: Workbench, actor: Actor, image_id: int) -> ImageDetail:
    require(actor, "annotator", "view images")
    with wb.session() as s:
        image = s.get(Image, image_id)
        if image is None:
            raise NotFound(f"no image #{image_id}")
        label = wb.taxonomy.labels.get(image.diagnosis_key) if image.diagnosis_key else None
        all_drafts = list(image.drafts)
        if image.status in NEEDS_WORK_STATUSES:
            routed = ensure_routed_draft(s, wb, image)
            if routed is not None and routed not in all_drafts:
                all_drafts.append(routed)
        routed = [d for d in all_drafts if d.kind == "routed"]
        drafts = rank_drafts([d for d in all_drafts if d.kind != "routed" or d is max(routed, key=lambda r: r.id)])
        head = user_chain_head(s, image_id, actor.id)
        saved = s.get(SavedWork, (actor.id, image_id))
        detail = ImageDetail(
            id=image.id,
            path=(wb.store_dir / image.file_path) if image.file_path else None,
            width=image.width,
            height=image.height,
            status=image.status,
            source=image.source,
            source_ref=image.source_ref,
            source_label=image.source_label,
            diagnosis_key=image.diagnosis_key,
            diagnosis_display=label.display if label else None,
            # a source code spanning several labels (HAM10000 bkl) gives the group only (ingest recipes)
            group9=label.group9 if label else (image.meta or {}).get("label_group9"),
            group3=label.group3 if label else (image.meta or {}).get("label_group3"),
            fitzpatrick=image.fitzpatrick,
            meta={k: v for k, v in (image.meta or {}).items() if k not in HIDDEN_META},
            drafts=[draft_dict(d) for d in drafts],
            current=annotation_dict(head) if head is not None else None,
            saved_work=dict(saved.form) if saved is not None else None,
            suggested_diagnoses=_suggested_diagnoses(all_drafts),
        )
    sources = [d for d in detail.drafts if d["kind"] != "routed"]  # where the two best sources disagree
    if len(sources) >= 2:
        detail.disagreements = field_disagreements(sources[0]["caption"], sources[1]["caption"])
    return detail


@dataclass(frozen=True)
class RelatedImage:
    """Another picture of the same lesion or patient (the export keeps them in one split)."""

    id: int
    column: str  # the metadata column they share, e.g. lesion_id
    value: str
    status: str
    source_label: str | None  # what the source dataset called it (not another annotator's answer)
    path: Path  # the stored picture


MAX_RELATED = 12


def related_images(wb: Workbench, actor: Actor, image_id: int) -> list[RelatedImage]:
    """Images sharing a lesion id, then a patient id, with this one (at most MAX_RELATED per column); the
    same lesion first, since that is what a dermatologist compares (another view, a later visit)."""
    require(actor, "annotator", "view images")
    with wb.session() as s:
        image = s.get(Image, image_id)
        if image is None:
            raise NotFound(f"no image #{image_id}")
        meta = image.meta or {}
        out: list[RelatedImage] = []
        seen = {image_id}
        for column in LESION_COLUMNS:
            value = meta.get(column)
            if value in (None, ""):
                continue
            rows = s.execute(
                select(Image.id, Image.status, Image.source_label, Image.file_path)
                .where(
                    Image.meta[column].as_string() == str(value),
                    Image.source == image.source,  # patient 7 of one dataset is not patient 7 of another
                    Image.id.not_in(seen),
                    Image.file_path.is_not(None),
                )
                .order_by(Image.id)
                .limit(MAX_RELATED)
            ).all()
            for row in rows:
                seen.add(row.id)
                out.append(RelatedImage(row.id, column, str(value), row.status, row.source_label, wb.store_dir / row.file_path))
    return out


def thumbnail(wb: Workbench, image_id: int, size: int = 160) -> bytes | None:
    """A small JPEG of a stored image, cached on disk next to the store (thumbs/)."""
    with wb.session() as s:
        row = s.execute(select(Image.sha256, Image.file_path).where(Image.id == image_id)).first()
    if row is None or row.file_path is None:
        return None
    cached = wb.settings.home / "thumbs" / f"{row.sha256}_{size}.jpg"
    if cached.exists():
        return cached.read_bytes()
    with PILImage.open(wb.store_dir / row.file_path) as img:
        img.thumbnail((size, size))
        buffer = io.BytesIO()
        img.convert("RGB").save(buffer, "JPEG", quality=80)
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
