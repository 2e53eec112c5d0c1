"""Likely label errors, ranked by cleanlab from the model's diagnosis scores and the current labels.

The label of an image is its verified diagnosis when it has one, else its source label (what an import
such as Fitzpatrick17k's web-scraped metadata said): the main target. The model's scores come from its
newest suggestion (top-K keys with scores, a distribution over the taxonomy: trainer/predict.py); the
mass it did not list is spread evenly over the other classes. Classes are the labels present.

`send_back_for_review` puts chosen images in front of reviewers again: a verified image becomes
annotated (its annotations and reviews stay), and every chosen image carries a `label_issue` note that
the review list shows as the reason until a reviewer verifies it again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import select

from curation.errors import NotFound
from curation.store import audit
from curation.store.auth import Actor, require
from curation.store.db import Workbench
from curation.store.models import Annotation, Draft, DraftKind, Image


@dataclass(frozen=True)
class SuspiciousLabel:
    image_id: int
    label: str  # taxonomy key
    label_source: str  # "verified" or "source"
    suggested: str  # the model's most likely class among the labels present
    label_quality: float  # cleanlab's self-confidence: the model's probability of the given label
    status: str


@dataclass(frozen=True)
class _Labelled:
    """An image with a label in the taxonomy and the model's newest scores for it."""

    image_id: int
    label: str
    label_source: str  # "verified" or "source"
    status: str
    scores: dict[str, float]  # the model's listed classes and their probabilities


def _labelled_images(wb: Workbench) -> list[_Labelled]:
    with wb.session() as s:
        suggestions: dict[int, dict[str, float]] = {}
        for image_id, diagnoses in s.execute(
            select(Draft.image_id, Draft.diagnoses).where(Draft.kind == DraftKind.MODEL).order_by(Draft.id)
        ):
            scores = {d["key"]: float(d.get("score") or 0.0) for d in diagnoses or [] if d.get("key")}
            if scores:
                suggestions[image_id] = scores  # the newest wins
        rows = s.execute(
            select(Image.id, Image.status, Image.diagnosis_key, Annotation.diagnosis_key)
            .outerjoin(Annotation, Annotation.id == Image.verified_annotation_id)
            .where(Image.id.in_(list(suggestions)))
        ).all()
    out = []
    for image_id, status, source_key, verified_key in rows:
        verified = status == "verified" and verified_key
        label = verified_key if verified else source_key
        if label is not None and label in wb.taxonomy.labels:
            out.append(_Labelled(image_id, label, "verified" if verified else "source", status, suggestions[image_id]))
    return out


def pred_probs_matrix(scores: list[dict[str, float]], classes: list[str]) -> np.ndarray:
    """(N, C) rows summing to 1: listed scores kept, the unlisted mass spread over the unlisted classes."""
    index = {key: i for i, key in enumerate(classes)}
    probs = np.zeros((len(scores), len(classes)))
    for row, listed in enumerate(scores):
        known = {index[k]: v for k, v in listed.items() if k in index}
        for column, value in known.items():
            probs[row, column] = value
        rest = [c for c in range(len(classes)) if c not in known]
        leftover = max(0.0, 1.0 - sum(known.values()))
        if rest:
            probs[row, rest] = leftover / len(rest) if leftover > 0 else 1e-6
    probs = np.clip(probs, 1e-9, None)
    return probs / probs.sum(axis=1, keepdims=True)


def suspicious_labels(wb: Workbench, actor: Actor, *, limit: int = 50) -> list[SuspiciousLabel]:
    """Images whose label cleanlab flags as a likely error, most likely first. Empty when there are no
    model suggestions or fewer than two labels."""
    require(actor, "reviewer", "look for label issues")
    from cleanlab.filter import find_label_issues

    images = _labelled_images(wb)
    classes = sorted({image.label for image in images})
    if len(classes) < 2:
        return []
    probs = pred_probs_matrix([image.scores for image in images], classes)
    given = np.array([classes.index(image.label) for image in images])
    # n_jobs=1: cleanlab's default forks a multiprocessing pool, and forked inside the app server (threads, open
    # sockets) its workers deadlocked: Review never loaded and the port stayed bound. One process is ample here.
    ranked = find_label_issues(given, probs, return_indices_ranked_by="self_confidence", n_jobs=1)
    return [
        SuspiciousLabel(
            image_id=images[i].image_id,
            label=images[i].label,
            label_source=images[i].label_source,
            suggested=classes[int(probs[i].argmax())],
            label_quality=float(probs[i, given[i]]),
            status=images[i].status,
        )
        for i in ranked[:limit]
    ]


def send_back_for_review(wb: Workbench, actor: Actor, image_ids: list[int], *, note: dict[str, Any] | None = None) -> int:
    """Flag the images' labels for another look; verified ones go back to the review list. Returns how many."""
    require(actor, "reviewer", "send labels back for review")
    with wb.session() as s:
        for image_id in image_ids:
            image = s.get(Image, image_id)
            if image is None:
                raise NotFound(f"no image #{image_id}")
            image.meta = {**(image.meta or {}), "label_issue": {"by": actor.username, **(note or {})}}
            if image.status == "verified":
                image.verified_annotation_id, image.status = None, "annotated"
            audit.record(s, actor, "label.send_back", "image", image_id, **(note or {}))
    return len(image_ids)
