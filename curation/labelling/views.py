"""Read models for the app's pages: what one image looks like to an annotator (its drafts, prefill sources,
suggested diagnoses) and the images of the same lesion; the pages call these instead of touching the database.
Reads, with one write: image_detail makes the image's routed draft (and its audit event) when the current evidence
has none yet. The dataset table, thumbnails and an image's history are curation/labelling/browse.py."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select

from curation.assist.routing import ensure_routed_draft
from curation.errors import NotFound
from curation.labelling.annotate import annotation_dict, user_chain_head
from curation.store.auth import Actor, require
from curation.store.db import Workbench
from curation.store.images import ImageMissing
from curation.store.models import (
    DIAGNOSING_KINDS,
    LESION_COLUMNS,
    NEEDS_WORK_STATUSES,
    Draft,
    DraftKind,
    Image,
    SavedWork,
)
from schema.caption import Caption
from schema.compare import caption_scores
from schema.fields import FIELD_KEYS

# the best available draft prefills the form: the routed one (each field from its best source) when there is one
HIDDEN_META = ("true_caption",)  # synthetic ground truth: never shown to annotators


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
    missing: bool = False  # the database names a picture the image store does not have (deleted behind our back)

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
            path=None,  # below, outside the transaction: a bucket's picture is a download
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
        key = image.file_path
    if key:
        try:
            detail.path = wb.images.local_path(key)
            detail.missing = not detail.path.is_file()
        except ImageMissing:
            detail.missing = True
        if detail.missing:
            detail.path = None
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
        found: list[tuple[Any, str, str]] = []  # (row, the shared column, its value)
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
                found.append((row, column, str(value)))
    out = []
    for row, column, value in found:  # outside the transaction: a bucket's picture is a download
        try:
            path = wb.images.local_path(row.file_path)
        except ImageMissing:
            continue  # gone from the store: nothing to compare with
        if path.is_file():
            out.append(RelatedImage(row.id, column, value, row.status, row.source_label, path))
    return out
