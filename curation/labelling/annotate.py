"""The annotation workflow core: append-only annotations and reviews (drafts are curation/assist/drafts.py).

- An annotation is never changed: an edit is a new row that supersedes the previous version.
  `supersedes_id` is unique in the database, so two people editing the same version at once
  cannot both win: the second gets a ConflictError and is asked to reload.
- An image is `annotated` once it has an annotation and `verified` once a reviewer (not the
  author) verifies its latest annotation. Superseding a verified annotation sends the image
  back to review.

One module on purpose: these rules hold together (a submit, an edit, an adjudication and a review each touch the
same version chain and image status in one transaction); split, a reader would have to hold several files in mind
to check one invariant.
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError

from curation.errors import ConflictError, NotFound, SkinflowError
from curation.labelling.queue import release
from curation.store import audit
from curation.store.auth import Actor, require
from curation.store.db import Workbench
from curation.store.models import (
    DIAGNOSIS_STATUSES,
    REVIEW_DECISIONS,
    Annotation,
    Draft,
    Image,
    Review,
    SavedWork,
    utcnow,
)
from schema.caption import Caption, validate_caption
from schema.fields import MAX_OTHER_CHARS
from schema.vocabulary import clean_text

QUALITY_FLAGS = ("not_skin", "poor_quality", "duplicate", "identifiable_person", "dermoscopy", "multiple_conditions")


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


def chain_head(s, annotation: Annotation) -> Annotation:
    """The newest version of the chain an annotation belongs to."""
    while True:
        newer = s.scalar(select(Annotation).where(Annotation.supersedes_id == annotation.id))
        if newer is None:
            return annotation
        annotation = newer


def chain_root(s, annotation: Annotation) -> Annotation:
    """The first version of the chain an annotation belongs to (its author owns the chain)."""
    while annotation.supersedes_id is not None:
        annotation = s.get(Annotation, annotation.supersedes_id)
    return annotation


def user_chain_head(s, image_id: int, user_id: int) -> Annotation | None:
    """The newest version of the chain a user started on an image, or None."""
    root = s.scalar(
        select(Annotation)
        .where(Annotation.image_id == image_id, Annotation.user_id == user_id, Annotation.supersedes_id.is_(None))
        .order_by(Annotation.id)
        .limit(1)
    )
    return chain_head(s, root) if root is not None else None


def annotation_dict(annotation: Annotation) -> dict[str, Any]:
    return {
        "id": annotation.id,
        "version": annotation.version,
        "user": annotation.user.username,
        "caption": annotation.caption,
        "diagnosis_key": annotation.diagnosis_key,
        "diagnosis_text": annotation.diagnosis_text,
        "diagnosis_status": annotation.diagnosis_status,
        "quality_flags": list(annotation.quality_flags or []),
        "rationale": annotation.rationale,
        "created_at": annotation.created_at,
    }


def current_annotation(wb: Workbench, actor: Actor, image_id: int) -> dict[str, Any] | None:
    """The newest version of the chain this user started on the image (what their form edits)."""
    require(actor, "annotator", "see annotations")
    with wb.session() as s:
        head = user_chain_head(s, image_id, actor.id)
        return annotation_dict(head) if head is not None else None


def _check_inputs(caption, diagnosis_status: str, quality_flags, rationale: str | None) -> tuple[Caption, str | None]:
    caption = validate_caption(caption)
    if diagnosis_status not in DIAGNOSIS_STATUSES:
        raise SkinflowError(f"diagnosis status must be one of {', '.join(DIAGNOSIS_STATUSES)}, not {diagnosis_status!r}")
    unknown = [f for f in quality_flags if f not in QUALITY_FLAGS]
    if unknown:
        raise SkinflowError(f"unknown quality flags {unknown}; use: {', '.join(QUALITY_FLAGS)}")
    if rationale is not None:
        rationale = clean_text(rationale) or None
        if rationale and len(rationale) > MAX_OTHER_CHARS * 2:
            raise SkinflowError(f"rationale is longer than {MAX_OTHER_CHARS * 2} characters; shorten it")
    return caption, rationale


class IncompleteAnnotation(SkinflowError):
    """A submit that would store something the annotator did not mean: nothing is stored."""


def check_complete(caption: Caption, diagnosis: str | None, diagnosis_status: str, quality_flags) -> None:
    """Refuse an annotation that says less than its status claims: a diagnosis confirmed or corrected to nothing
    (a search typed but never picked, or no source label to confirm), or a form that says nothing at all (a stray
    Ctrl+Enter on a fresh import). "Uncertain" may leave the diagnosis open; a diagnosis alone is a label check;
    a quality flag such as not_skin may leave everything else empty."""
    if diagnosis_status in ("confirmed", "corrected") and not clean_text(diagnosis or ""):
        what = "there is no source label to confirm" if diagnosis_status == "confirmed" else "no diagnosis was picked"
        raise IncompleteAnnotation(
            f"Not saved: the diagnosis is marked {diagnosis_status} but {what}. Pick a diagnosis in the search box "
            "(type, then choose it from the list), or mark it Uncertain."
        )
    if caption.is_empty() and not clean_text(diagnosis or "") and not quality_flags:
        raise IncompleteAnnotation(
            "Not saved: the form is empty (no field, no diagnosis, no flag). Describe the lesion or give a diagnosis, "
            "or set a quality flag (for example not skin or poor quality) to say why it cannot be described."
        )


def _insert_annotation(
    s,
    wb: Workbench,
    actor: Actor,
    image: Image,
    caption: Caption,
    *,
    diagnosis: str | None,
    diagnosis_status: str,
    supersedes_id: int | None,
    quality_flags,
    rationale: str | None,
    seconds_spent: float | None,
    based_on_draft_id: int | None,
    origin: str | None = None,
) -> Annotation:
    if image.status == "image_missing":
        raise ConflictError(f"image #{image.id} has no picture yet; run `skinflow fetch-images` first")
    version = 1
    if supersedes_id is not None:
        parent = s.get(Annotation, supersedes_id)
        if parent is None or parent.image_id != image.id:
            raise NotFound(f"annotation #{supersedes_id} does not belong to image #{image.id}")
        if chain_root(s, parent).user_id != actor.id:  # your own chain stays yours, even after a reviewer's edit
            require(actor, "reviewer", "edit another person's annotation")
        if s.scalar(select(Annotation.id).where(Annotation.supersedes_id == supersedes_id)) is not None:
            raise ConflictError(
                f"annotation #{supersedes_id} was edited by someone else meanwhile; reload the image and apply your change again"
            )
        version = parent.version + 1
    else:
        mine = s.scalar(select(Annotation.id).where(Annotation.image_id == image.id, Annotation.user_id == actor.id).limit(1))
        if mine is not None:
            raise ConflictError(
                f"you annotated image #{image.id} already: edit your latest version instead of starting a new one"
            )
    if based_on_draft_id is not None and s.get(Draft, based_on_draft_id) is None:
        raise NotFound(f"no draft #{based_on_draft_id}")
    key, free_text = _diagnosis(wb, diagnosis)
    annotation = Annotation(
        image_id=image.id,
        user_id=actor.id,
        version=version,
        supersedes_id=supersedes_id,
        caption=caption.to_json(),
        diagnosis_key=key,
        diagnosis_text=free_text,
        diagnosis_status=diagnosis_status,
        quality_flags=list(quality_flags),
        rationale=rationale,
        seconds_spent=seconds_spent,
        based_on_draft_id=based_on_draft_id,
        origin=origin,
    )
    s.add(annotation)
    s.flush()
    if image.verified_annotation_id is not None and image.verified_annotation_id == supersedes_id:
        image.verified_annotation_id = None  # the verified version changed: it needs review again
    if image.status in ("pending", "verified") and image.verified_annotation_id is None:
        image.status = "annotated"
    # the work is in: the image is no longer reserved for this user and their saved form is done with
    release(s, actor.id, image.id)
    s.execute(delete(SavedWork).where(SavedWork.image_id == image.id, SavedWork.user_id == actor.id))
    audit.record(
        s,
        actor,
        "annotation.submit",
        "annotation",
        annotation.id,
        image_id=image.id,
        version=version,
        supersedes_id=supersedes_id,
        diagnosis_key=key,
        diagnosis_status=diagnosis_status,
    )
    return annotation


def submit_annotation(
    wb: Workbench,
    actor: Actor,
    image_id: int,
    caption: Caption | dict,
    *,
    diagnosis: str | None,
    diagnosis_status: str,
    supersedes_id: int | None = None,
    quality_flags: list[str] | tuple[str, ...] = (),
    rationale: str | None = None,
    seconds_spent: float | None = None,
    based_on_draft_id: int | None = None,
    origin: str | None = None,
) -> int:
    """Store a new annotation version; returns its id. To edit, pass the id of the version you edited:
    if someone else edited that version meanwhile, ConflictError (nothing is overwritten)."""
    require(actor, "annotator", "annotate")
    caption, rationale = _check_inputs(caption, diagnosis_status, quality_flags, rationale)
    check_complete(caption, diagnosis, diagnosis_status, quality_flags)
    try:
        with wb.session() as s:
            annotation = _insert_annotation(
                s,
                wb,
                actor,
                _image(s, image_id),
                caption,
                diagnosis=diagnosis,
                diagnosis_status=diagnosis_status,
                supersedes_id=supersedes_id,
                quality_flags=quality_flags,
                rationale=rationale,
                seconds_spent=seconds_spent,
                based_on_draft_id=based_on_draft_id,
                origin=origin,
            )
            return annotation.id
    except IntegrityError:
        raise ConflictError(
            f"annotation #{supersedes_id} was edited by someone else meanwhile; reload the image and apply your change again"
        ) from None


def adjudicate(
    wb: Workbench,
    actor: Actor,
    image_id: int,
    caption: Caption | dict,
    *,
    diagnosis: str | None,
    diagnosis_status: str = "confirmed",
    quality_flags: list[str] | tuple[str, ...] = (),
    rationale: str | None = None,
    seconds_spent: float | None = None,
) -> int:
    """A reviewer's final word: their own annotation, verified in the same transaction. Returns its id.
    Four eyes: it settles other people's annotations, so an image annotated by nobody but this reviewer
    cannot be adjudicated by them (admins may, for single-person teams, as with reviews)."""
    require(actor, "reviewer", "adjudicate")
    caption, rationale = _check_inputs(caption, diagnosis_status, quality_flags, rationale)
    check_complete(caption, diagnosis, diagnosis_status, quality_flags)
    try:
        with wb.session() as s:
            image = _image(s, image_id)
            others = s.scalar(
                select(Annotation.id).where(Annotation.image_id == image_id, Annotation.user_id != actor.id).limit(1)
            )
            if others is None and actor.role != "admin":
                raise ConflictError(
                    "only you annotated this image: adjudicating would verify your own label; another reviewer must"
                )
            head = user_chain_head(s, image_id, actor.id)
            annotation = _insert_annotation(
                s,
                wb,
                actor,
                image,
                caption,
                diagnosis=diagnosis,
                diagnosis_status=diagnosis_status,
                supersedes_id=head.id if head is not None else None,
                quality_flags=quality_flags,
                rationale=rationale,
                seconds_spent=seconds_spent,
                based_on_draft_id=None,
            )
            review = Review(annotation_id=annotation.id, reviewer_id=actor.id, decision="verified", comment="adjudicated")
            s.add(review)
            s.flush()
            image.verified_annotation_id, image.status = annotation.id, "verified"
            audit.record(s, actor, "annotation.adjudicated", "annotation", annotation.id, image_id=image_id, review_id=review.id)
            return annotation.id
    except IntegrityError:
        raise ConflictError("this image changed while you adjudicated; reload it") from None


MAX_SAVED_FORM_CHARS = 50_000


def save_work(wb: Workbench, actor: Actor, image_id: int, form: dict[str, Any]) -> None:
    """Keep an unsubmitted form ("Save draft"); it is restored next time and removed on submit."""
    require(actor, "annotator", "save work")
    if len(json.dumps(form, default=str)) > MAX_SAVED_FORM_CHARS:
        raise SkinflowError("the form is too large to save; shorten the free-text fields")
    with wb.session() as s:
        _image(s, image_id)
        row = s.get(SavedWork, (actor.id, image_id))
        if row is None:
            s.add(SavedWork(user_id=actor.id, image_id=image_id, form=form))
        else:
            row.form, row.updated_at = form, utcnow()
        audit.record(s, actor, "annotation.save_work", "image", image_id)


def load_work(wb: Workbench, actor: Actor, image_id: int) -> dict[str, Any] | None:
    require(actor, "annotator", "load saved work")
    with wb.session() as s:
        row = s.get(SavedWork, (actor.id, image_id))
        return dict(row.form) if row is not None else None


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
            if (image.meta or {}).get("label_issue"):  # a reviewer looked again: the flag has done its job
                image.meta = {k: v for k, v in image.meta.items() if k != "label_issue"}
        elif image.verified_annotation_id == annotation_id:
            image.verified_annotation_id, image.status = None, "annotated"
        audit.record(s, actor, f"annotation.{decision}", "annotation", annotation_id, image_id=image.id, review_id=review.id)
        return review.id
