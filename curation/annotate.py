"""The annotation workflow core: drafts, append-only annotations, reviews.

- An annotation is never changed: an edit is a new row that supersedes the previous version.
  `supersedes_id` is unique in the database, so two people editing the same version at once
  cannot both win: the second gets a ConflictError and is asked to reload.
- An image is `annotated` once it has an annotation and `verified` once a reviewer (not the
  author) verifies its latest annotation. Superseding a verified annotation sends the image
  back to review.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from curation import audit
from curation.auth import Actor, require
from curation.db import Workbench
from curation.errors import ConflictError, NotFound, SkinflowError
from curation.models import DIAGNOSIS_STATUSES, DRAFT_KINDS, REVIEW_DECISIONS, Annotation, Draft, Image, Review
from schema.caption import Caption, validate_caption
from schema.fields import MAX_OTHER_CHARS
from schema.vocabulary import clean_text

QUALITY_FLAGS = ("blurry", "poor_lighting", "not_skin", "dermoscopy", "multiple_conditions", "identifiable_person", "duplicate")


def _image(session, image_id: int) -> Image:
    image = session.get(Image, image_id)
    if image is None:
        raise NotFound(f"no image #{image_id}")
    return image


def _diagnosis(wb: Workbench, diagnosis: str | None) -> tuple[str | None, str | None]:
    """(taxonomy key, free text): free text is kept when no key fits."""
    if diagnosis is None or not clean_text(diagnosis):
        return None, None
    key = wb.taxonomy.normalise(diagnosis)
    return (key, None) if key else (None, clean_text(diagnosis)[:500])


def add_draft(
    wb: Workbench, actor: Actor, image_id: int, *, kind: str, producer: str, version: str,
    caption: Caption | dict | None, diagnoses: list[dict[str, Any]] | None = None,
    raw_reply: str | None = None, error: str | None = None, meta: dict | None = None,
) -> int:
    """Store a draft caption (LLM, model or synthetic) for an image; returns the draft id."""
    require(actor, "admin", "add drafts")
    if kind not in DRAFT_KINDS:
        raise SkinflowError(f"unknown draft kind {kind!r}; use one of {', '.join(DRAFT_KINDS)}")
    caption_json = validate_caption(caption).to_json() if caption is not None else None
    with wb.session() as s:
        _image(s, image_id)
        draft = Draft(
            image_id=image_id, kind=kind, producer=producer, version=version, caption=caption_json,
            diagnoses=list(diagnoses or []), raw_reply=raw_reply, error=error, meta=dict(meta or {}),
        )
        s.add(draft)
        s.flush()
        audit.record(s, actor, "draft.add", "draft", draft.id, image_id=image_id, kind=kind, producer=producer)
        return draft.id


def submit_annotation(
    wb: Workbench, actor: Actor, image_id: int, caption: Caption | dict, *, diagnosis: str | None,
    diagnosis_status: str, supersedes_id: int | None = None, quality_flags: list[str] | tuple[str, ...] = (),
    rationale: str | None = None, seconds_spent: float | None = None, based_on_draft_id: int | None = None,
) -> int:
    """Store a new annotation version; returns its id. To edit, pass the id of the version you edited."""
    require(actor, "annotator", "annotate")
    caption = validate_caption(caption)
    if diagnosis_status not in DIAGNOSIS_STATUSES:
        raise SkinflowError(f"diagnosis status must be one of {', '.join(DIAGNOSIS_STATUSES)}, not {diagnosis_status!r}")
    unknown = [f for f in quality_flags if f not in QUALITY_FLAGS]
    if unknown:
        raise SkinflowError(f"unknown quality flags {unknown}; use: {', '.join(QUALITY_FLAGS)}")
    if rationale is not None:
        rationale = clean_text(rationale)
        if len(rationale) > MAX_OTHER_CHARS * 2:
            raise SkinflowError(f"rationale is longer than {MAX_OTHER_CHARS * 2} characters; shorten it")
    key, free_text = _diagnosis(wb, diagnosis)
    try:
        with wb.session() as s:
            image = _image(s, image_id)
            if image.status == "image_missing":
                raise ConflictError(f"image #{image_id} has no picture yet; run `skinflow fetch-images` first")
            version = 1
            if supersedes_id is not None:
                parent = s.get(Annotation, supersedes_id)
                if parent is None or parent.image_id != image_id:
                    raise NotFound(f"annotation #{supersedes_id} does not belong to image #{image_id}")
                if parent.user_id != actor.id:
                    require(actor, "reviewer", "edit another person's annotation")
                version = parent.version + 1
            else:
                mine = s.scalar(select(Annotation.id).where(Annotation.image_id == image_id, Annotation.user_id == actor.id).limit(1))
                if mine is not None:
                    raise ConflictError(f"you annotated image #{image_id} already: edit your latest version instead of starting a new one")
            if based_on_draft_id is not None and s.get(Draft, based_on_draft_id) is None:
                raise NotFound(f"no draft #{based_on_draft_id}")
            annotation = Annotation(
                image_id=image_id, user_id=actor.id, version=version, supersedes_id=supersedes_id,
                caption=caption.to_json(), diagnosis_key=key, diagnosis_text=free_text,
                diagnosis_status=diagnosis_status, quality_flags=list(quality_flags), rationale=rationale,
                seconds_spent=seconds_spent, based_on_draft_id=based_on_draft_id,
            )
            s.add(annotation)
            s.flush()
            if image.verified_annotation_id is not None and image.verified_annotation_id == supersedes_id:
                image.verified_annotation_id = None  # the verified version changed: it needs review again
            if image.status in ("pending", "verified") and image.verified_annotation_id is None:
                image.status = "annotated"
            audit.record(
                s, actor, "annotation.submit", "annotation", annotation.id, image_id=image_id, version=version,
                supersedes_id=supersedes_id, diagnosis_key=key, diagnosis_status=diagnosis_status,
            )
            return annotation.id
    except IntegrityError:
        raise ConflictError(
            f"annotation #{supersedes_id} was edited by someone else meanwhile; reload the image and apply your change again"
        ) from None


def review_annotation(wb: Workbench, actor: Actor, annotation_id: int, decision: str, comment: str | None = None) -> int:
    """Verify or reject the latest version of an annotation; returns the review id."""
    require(actor, "reviewer", "review annotations")
    if decision not in REVIEW_DECISIONS:
        raise SkinflowError(f"decision must be one of {', '.join(REVIEW_DECISIONS)}")
    with wb.session() as s:
        annotation = s.get(Annotation, annotation_id)
        if annotation is None:
            raise NotFound(f"no annotation #{annotation_id}")
        if s.scalar(select(Annotation.id).where(Annotation.supersedes_id == annotation_id)) is not None:
            raise ConflictError(f"annotation #{annotation_id} has a newer version; review that one")
        if annotation.user_id == actor.id and actor.role != "admin":
            raise ConflictError("you cannot review your own annotation: another reviewer must")
        image = _image(s, annotation.image_id)
        review = Review(annotation_id=annotation_id, reviewer_id=actor.id, decision=decision, comment=comment)
        s.add(review)
        s.flush()
        if decision == "verified":
            image.verified_annotation_id, image.status = annotation_id, "verified"
        elif image.verified_annotation_id == annotation_id:
            image.verified_annotation_id, image.status = None, "annotated"
        audit.record(s, actor, f"annotation.{decision}", "annotation", annotation_id, image_id=image.id, review_id=review.id)
        return review.id
