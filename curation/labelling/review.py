"""What reviewers look at: items that need a decision, and how annotations of one image differ."""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations
from typing import Any

from sqlalchemy import distinct, func, select

from curation.labelling.annotate import annotation_dict
from curation.store.auth import Actor, require
from curation.store.db import Workbench
from curation.store.models import Annotation, Image
from curation.store.workflow import get_workflow_settings
from schema.caption import Caption
from schema.compare import caption_scores

REASONS = ("disagreement", "suspicious label", "uncertain", "flagged", "awaiting verification")  # most urgent first


def _heads(annotations: list[Annotation]) -> list[Annotation]:
    """The newest version of every chain: annotations nothing supersedes."""
    superseded = {a.supersedes_id for a in annotations if a.supersedes_id}
    return [a for a in annotations if a.id not in superseded]


@dataclass(frozen=True)
class HeadPair:
    """Two current annotations of one image compared: a score per field (1 = the same) and whether the labels agree."""

    a: int  # annotation ids
    b: int
    scores: dict[str, float]
    same_label: bool

    def differs(self, threshold: float) -> bool:
        return not self.same_label or min(self.scores.values()) < threshold


@dataclass(frozen=True)
class ReviewItem:
    """An annotated image waiting for a reviewer, with why it is in the list."""

    image_id: int
    reason: str  # one of REASONS
    heads: list[dict[str, Any]]  # the newest version of every annotator's annotation (annotation_dict)
    pairs: list[HeadPair]  # every two heads compared


def compare_heads(heads: list[dict[str, Any]]) -> list[HeadPair]:
    """Per-field scores between every pair of annotation heads, and whether the labels agree."""
    pairs = []
    for a, b in combinations(heads, 2):
        scores = caption_scores(Caption.model_validate(a["caption"]), Caption.model_validate(b["caption"]))
        same_label = (a["diagnosis_key"] or a["diagnosis_text"]) == (b["diagnosis_key"] or b["diagnosis_text"])
        pairs.append(HeadPair(a["id"], b["id"], scores, same_label))
    return pairs


def heads_disagree(heads: list[dict[str, Any]], threshold: float) -> bool:
    """Two current annotations name different labels, or some field scores below the threshold between them."""
    return any(pair.differs(threshold) for pair in compare_heads(heads))


def images_in_disagreement(wb: Workbench) -> set[int]:
    """Images whose annotators' current annotations disagree (what Review calls "disagreement"), in any status."""
    threshold = get_workflow_settings(wb).disagreement_threshold
    with wb.session() as s:
        shared = select(Annotation.image_id).group_by(Annotation.image_id).having(func.count(distinct(Annotation.user_id)) >= 2)
        by_image: dict[int, list[Annotation]] = {}
        for a in s.scalars(select(Annotation).where(Annotation.image_id.in_(shared))):
            by_image.setdefault(a.image_id, []).append(a)
        return {
            image_id
            for image_id, annotations in by_image.items()
            if heads_disagree([annotation_dict(a) for a in _heads(annotations)], threshold)
        }


def review_items(wb: Workbench, actor: Actor, *, limit: int = 200) -> list[ReviewItem]:
    """Annotated images that are not verified yet, most urgent first, with the reason."""
    require(actor, "reviewer", "review")
    threshold = get_workflow_settings(wb).disagreement_threshold
    items = []
    with wb.session() as s:
        images = s.scalars(select(Image).where(Image.status == "annotated").order_by(Image.id)).all()
        by_image: dict[int, list[Annotation]] = {i.id: [] for i in images}
        for a in s.scalars(select(Annotation).where(Annotation.image_id.in_(list(by_image)))):
            by_image[a.image_id].append(a)
        for image in images:
            heads = [annotation_dict(a) for a in _heads(by_image[image.id])]
            if not heads:
                continue
            pairs = compare_heads(heads)
            if any(pair.differs(threshold) for pair in pairs):
                reason = "disagreement"
            elif (image.meta or {}).get("label_issue"):
                reason = "suspicious label"
            elif any(h["diagnosis_status"] == "uncertain" for h in heads):
                reason = "uncertain"
            elif any(h["quality_flags"] for h in heads):
                reason = "flagged"
            else:
                reason = "awaiting verification"
            items.append(ReviewItem(image.id, reason, heads, pairs))
    items.sort(key=lambda item: (REASONS.index(item.reason), item.image_id))
    return items[:limit]
