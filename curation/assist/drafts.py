"""Drafts: what a drafting source (an LLM, a trained model, the router, the demo) said about an image, stored as
Draft rows for the Annotate form to start from. Drafts are never edited; a newer one of the same kind wins.

Every writer (LLM drafting, suggestion imports, routing's caller, the demo) stores them through `add_drafts`, in
bulk: a drafting run writes beside the requests in flight and must not hold the interpreter long.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import insert, select

from curation.errors import NotFound, SkinflowError
from curation.store.auth import Actor, require
from curation.store.db import Workbench
from curation.store.models import DIAGNOSING_KINDS, DRAFT_KINDS, AuditEvent, Draft, DraftKind, Image, utcnow
from schema.caption import Caption, validate_caption


@dataclass
class NewDraft:
    """A draft to store. `diagnoses`: ranked [{"key", "score"}], best first; `meta`: what the source adds (the
    prompt, token counts, salvage notes, the fields a routed draft took from each source)."""

    image_id: int
    kind: DraftKind | str
    producer: str  # the model's name, "skinflow" for a trained model, "router"
    version: str  # the prompt or model version: one draft per image and version is what re-runs skip
    caption: Caption | dict[str, Any] | None = None
    diagnoses: list[dict[str, Any]] = field(default_factory=list)
    raw_reply: str | None = None
    error: str | None = None  # why there is no caption (the reply could not be read, the request failed)
    meta: dict[str, Any] = field(default_factory=dict)

    def row(self) -> dict[str, Any]:
        if self.kind not in DRAFT_KINDS:
            raise SkinflowError(f"unknown draft kind {self.kind!r}; use one of {', '.join(DRAFT_KINDS)}")
        return {
            "image_id": self.image_id,
            "kind": str(self.kind),
            "producer": self.producer,
            "version": self.version,
            "caption": validate_caption(self.caption).to_json() if self.caption is not None else None,
            "diagnoses": list(self.diagnoses or []),
            "raw_reply": self.raw_reply,
            "error": self.error,
            "meta": dict(self.meta or {}),
            "created_at": utcnow(),
        }


def add_drafts(wb: Workbench, actor: Actor, drafts: list[NewDraft]) -> list[int]:
    """Store drafts in one transaction, each audited; returns their ids in order."""
    require(actor, "admin", "add drafts")
    rows = [draft.row() for draft in drafts]
    with wb.session() as s:
        ids = list(s.scalars(insert(Draft).returning(Draft.id, sort_by_parameter_order=True), rows))
        s.execute(
            insert(AuditEvent),
            [
                {
                    "user_id": actor.id,
                    "username": actor.username,
                    "action": "draft.add",
                    "entity": "draft",
                    "entity_id": draft_id,
                    "payload": {"image_id": row["image_id"], "kind": row["kind"], "producer": row["producer"]},
                    "created_at": row["created_at"],
                }
                for draft_id, row in zip(ids, rows, strict=True)
            ],
        )
        return ids


def add_draft(wb: Workbench, actor: Actor, image_id: int, **fields: Any) -> int:
    """One draft (`fields`: those of NewDraft); NotFound when the image does not exist. Returns the draft id."""
    require(actor, "admin", "add drafts")
    draft = NewDraft(image_id=image_id, **fields)
    with wb.session() as s:
        if s.get(Image, image_id) is None:
            raise NotFound(f"no image #{image_id}")
    return add_drafts(wb, actor, [draft])[0]


@dataclass(frozen=True)
class LatestDraft:
    """The newest usable draft of one kind for an image (what Label Studio gets as a prediction)."""

    kind: str
    producer: str
    version: str
    caption: dict[str, Any] | None
    diagnoses: list[dict[str, Any]]


def latest_model_drafts(s, image_ids: list[int]) -> dict[int, list[LatestDraft]]:
    """The newest usable draft of each diagnosing kind (LLM, model suggestion, routed) per image, by kind name."""
    out: dict[int, dict[str, LatestDraft]] = {}
    for d in s.scalars(
        select(Draft)
        .where(Draft.image_id.in_(image_ids), Draft.kind.in_(DIAGNOSING_KINDS), Draft.error.is_(None))
        .order_by(Draft.id)
    ):
        out.setdefault(d.image_id, {})[d.kind] = LatestDraft(d.kind, d.producer, d.version, d.caption, d.diagnoses or [])
    return {image_id: [kinds[k] for k in sorted(kinds)] for image_id, kinds in out.items()}
