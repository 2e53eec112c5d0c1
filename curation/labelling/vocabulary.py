"""Vocabulary review: the caption terms annotators typed that the vocabulary lacks, and reviewers' decisions on them.

Undecided terms are read from the current annotations (nothing to keep in step); a decision is a
VocabularyTerm row. Accepting a term (with synonyms) extends this workbench's vocabulary: the annotate page
offers it, and a synonym typed later is stored as the term. Rejecting it only takes it off the list: the
annotations that use it keep it (nothing stored is changed), and exports carry it as before.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from sqlalchemy import select

from curation.errors import ConflictError, NotFound
from curation.store.audit import record
from curation.store.auth import Actor, require
from curation.store.db import Workbench, load_local_terms
from curation.store.models import Annotation, VocabularyTerm, utcnow
from schema.fields import MULTI_FIELDS
from schema.vocabulary import clean_term, default_vocabulary, vocabulary_with

SAMPLE_IMAGES = 5  # image ids shown per pending term, so a reviewer can look at how it was used


@dataclass
class PendingTerm:
    field: str
    term: str
    annotations: int = 0
    image_ids: list[int] = field(default_factory=list)


def pending_terms(wb: Workbench, actor: Actor) -> list[PendingTerm]:
    """Terms in current annotations that are neither in the vocabulary nor decided on, most used first."""
    require(actor, "reviewer", "review new vocabulary terms")
    load_local_terms(wb)
    vocab = default_vocabulary()
    with wb.session() as s:
        decided = set(s.execute(select(VocabularyTerm.field, VocabularyTerm.term)).all())
        superseded = select(Annotation.supersedes_id).where(Annotation.supersedes_id.is_not(None))
        rows = s.execute(
            select(Annotation.image_id, Annotation.caption).where(Annotation.id.not_in(superseded)).order_by(Annotation.id)
        ).all()
    found: dict[tuple[str, str], PendingTerm] = {}
    for image_id, caption in rows:
        for field_key in MULTI_FIELDS:
            for term in (caption or {}).get(field_key) or ():
                if not isinstance(term, str) or (field_key, term) in decided or vocab.normalise(field_key, term)[1]:
                    continue
                pending = found.setdefault((field_key, term), PendingTerm(field_key, term))
                pending.annotations += 1
                if len(pending.image_ids) < SAMPLE_IMAGES and image_id not in pending.image_ids:
                    pending.image_ids.append(image_id)
    return sorted(found.values(), key=lambda p: (-p.annotations, p.field, p.term))


def decide_term(
    wb: Workbench, actor: Actor, field_key: str, term: str, *, accept: bool, synonyms: tuple[str, ...] = ()
) -> VocabularyTerm:
    """Accept a term into the vocabulary (with synonyms) or reject it; a later decision replaces an earlier one."""
    require(actor, "reviewer", "decide on vocabulary terms")
    if field_key not in MULTI_FIELDS:
        raise NotFound(f"no caption field {field_key!r} takes vocabulary terms; use one of: {', '.join(MULTI_FIELDS)}")
    cleaned = clean_term(term)
    if not cleaned or len(cleaned) > 200:
        raise ConflictError(f"term {term!r} is empty or longer than 200 characters; give the term as annotators typed it")
    names = tuple(dict.fromkeys(clean_term(s) for s in synonyms if clean_term(s) and clean_term(s) != cleaned))
    if not accept and names:
        raise ConflictError("a rejected term takes no synonyms; leave them out, or accept the term")
    load_local_terms(wb)
    with wb.session() as s:
        existing = s.scalars(
            select(VocabularyTerm).where(VocabularyTerm.field == field_key, VocabularyTerm.term == cleaned)
        ).one_or_none()
        others: dict[str, list[tuple[str, tuple[str, ...]]]] = defaultdict(list)
        for row in s.scalars(select(VocabularyTerm).where(VocabularyTerm.decision == "accepted")):
            if row is not existing:
                others[row.field].append((row.term, tuple(row.synonyms or ())))
    vocab = vocabulary_with(dict(others))  # the vocabulary without this term's earlier decision
    if accept:
        for name in (cleaned, *names):
            known, is_known = vocab.normalise(field_key, name)
            if is_known:
                what = "it is" if name == cleaned else f"synonym {name!r} is"
                raise ConflictError(f"{what} already in the {field_key} vocabulary as {known!r}; nothing was changed")
    with wb.session() as s:
        row = s.get(VocabularyTerm, existing.id) if existing else None
        if row is None:
            row = VocabularyTerm(field=field_key, term=cleaned)
            s.add(row)
        row.decision = "accepted" if accept else "rejected"
        row.synonyms = list(names)
        row.decided_by = actor.id
        row.decided_at = utcnow()
        s.flush()
        record(
            s, actor, f"vocabulary.{row.decision}", "vocabulary_term", row.id, field=field_key, term=cleaned, synonyms=list(names)
        )
    load_local_terms(wb)
    return row
