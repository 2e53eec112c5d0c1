"""The annotation queue: which image a person gets next.

An image needs an annotator while fewer than `overlap` people have annotated it. The next item
for a user is one that needs them (they have not annotated it), is not leased to someone else,
and was not skipped by them (skipped images come back only when nothing else is left). The item
is leased to the user for `lease_minutes`. With probability `gold_rate`, a verified image the
user has not seen is served instead, unannounced, to measure their accuracy.

Strategies decide the order among candidates: `sequential` (oldest first) and `random`
(a random starting id, then in id order: an index walk, not ORDER BY random()). Both need only
the (status, id) index, so the query stays fast at a million images (benchmarks/queue.py).
With model suggestions (curation/assist/suggestions.py writes queue_scores): `uncertainty` serves the
image whose suggestion is least sure first (1 - top-1 score), `disagreement` the one where the LLM
draft and the model suggestion differ most (1 - mean field score); images without a score follow in
sequential order. `fitzpatrick_balance` serves the skin type with the fewest annotated or verified
images first (unknown types last), to even out a set that is mostly light skin.
Leases are bookkeeping, not data, so taking one writes no audit event; skips do.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import and_, delete, exists, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from curation.errors import NotFound, SkinflowError
from curation.store import audit
from curation.store.auth import Actor, require
from curation.store.db import Workbench
from curation.store.models import Annotation, GoldAssignment, Image, Lease, QueueScore, Skip, utcnow
from curation.store.workflow import QUEUE_STRATEGIES, WorkflowSettings, get_workflow_settings

LEASE_RETRIES = 5


@dataclass(frozen=True)
class QueueItem:
    image_id: int
    gold: bool  # for bookkeeping only: never shown to the annotator


def _available(user_id: int, now: datetime, include_skipped: bool):
    """Conditions shared by every candidate query."""
    conditions = [
        ~exists().where(Lease.image_id == Image.id, Lease.user_id != user_id, Lease.expires_at > now),
    ]
    if not include_skipped:
        conditions.append(~exists().where(Skip.image_id == Image.id, Skip.user_id == user_id))
    return conditions


def _needs_more(overlap: int):
    annotators = select(func.count(func.distinct(Annotation.user_id))).where(Annotation.image_id == Image.id).scalar_subquery()
    return and_(Image.status == "annotated", annotators < overlap)


def _candidate(
    s: Session,
    user_id: int,
    settings: WorkflowSettings,
    now: datetime,
    include_skipped: bool,
    pivot: int | None,
    strategy: str = "sequential",
    skin_types: tuple[int, ...] = (),
) -> int | None:
    mine = exists().where(Annotation.image_id == Image.id, Annotation.user_id == user_id)
    passes = [[Image.status == "pending"]]  # nobody annotated these: the cheap, common case
    if settings.overlap > 1:
        passes.append([_needs_more(settings.overlap), ~mine])
    for conditions in passes:
        where = [*conditions, *_available(user_id, now, include_skipped)]
        if strategy in ("uncertainty", "disagreement"):
            score = getattr(QueueScore, strategy)
            found = s.scalar(
                select(Image.id)
                .join(QueueScore, QueueScore.image_id == Image.id)
                .where(*where, score.is_not(None))
                .order_by(score.desc(), Image.id)
                .limit(1)
            )
            if found is not None:
                return found
        for skin_type in skin_types:
            found = s.scalar(select(Image.id).where(*where, Image.fitzpatrick == skin_type).order_by(Image.id).limit(1))
            if found is not None:
                return found
        base = select(Image.id).where(*where).order_by(Image.id).limit(1)
        if pivot is None:
            found = s.scalar(base)
        else:
            found = s.scalar(base.where(Image.id >= pivot)) or s.scalar(base.where(Image.id < pivot))
        if found is not None:
            return found
    return None


def _skin_types_by_need(s: Session) -> tuple[int, ...]:
    """Fitzpatrick types 1-6, the fewest annotated or verified images first."""
    done = dict(
        s.execute(
            select(Image.fitzpatrick, func.count())
            .where(Image.status.in_(("annotated", "verified")), Image.fitzpatrick.is_not(None))
            .group_by(Image.fitzpatrick)
        ).all()
    )
    return tuple(sorted(range(1, 7), key=lambda t: (done.get(t, 0), t)))


def _gold_candidate(s: Session, user_id: int, rng: random.Random) -> int | None:
    authored = exists().where(Annotation.image_id == Image.id, Annotation.user_id == user_id)
    served = exists().where(GoldAssignment.image_id == Image.id, GoldAssignment.user_id == user_id)
    query = select(Image.id).where(Image.status == "verified", ~authored, ~served)
    top = s.scalar(select(func.max(Image.id)))
    if top is None:
        return None
    pivot = rng.randint(1, top)
    return s.scalar(query.where(Image.id >= pivot).order_by(Image.id).limit(1)) or s.scalar(query.order_by(Image.id).limit(1))


def _lease(s: Session, image_id: int, user_id: int, now: datetime, minutes: int, gold: bool) -> None:
    lease = s.get(Lease, image_id)
    until = now + timedelta(minutes=minutes)
    if lease is None:
        s.add(Lease(image_id=image_id, user_id=user_id, expires_at=until, gold=gold))
    else:
        lease.user_id, lease.expires_at, lease.gold = user_id, until, gold
    if gold:
        s.add(GoldAssignment(user_id=user_id, image_id=image_id))
    s.flush()


def next_item(
    wb: Workbench, actor: Actor, *, strategy: str | None = None, rng: random.Random | None = None, now: datetime | None = None
) -> QueueItem | None:
    """Lease and return the next image for this user, or None when nothing is left."""
    require(actor, "annotator", "take items from the annotation queue")
    settings = get_workflow_settings(wb)
    strategy = strategy or settings.queue_strategy
    if strategy not in QUEUE_STRATEGIES:
        raise SkinflowError(f"unknown queue strategy {strategy!r}; use one of {', '.join(QUEUE_STRATEGIES)}")
    rng = rng or random.Random()
    now = now or utcnow()
    for _attempt in range(LEASE_RETRIES):
        try:
            with wb.session() as s:
                held = s.execute(
                    select(Lease.image_id, Lease.gold)
                    .where(
                        Lease.user_id == actor.id,
                        Lease.expires_at > now,
                        ~exists().where(Annotation.image_id == Lease.image_id, Annotation.user_id == actor.id),
                    )
                    .order_by(Lease.image_id)
                    .limit(1)
                ).first()
                if held is not None:  # a reload or a second tab: keep working on the same image
                    return QueueItem(held.image_id, held.gold)
                if settings.gold_rate > 0 and rng.random() < settings.gold_rate:
                    gold_id = _gold_candidate(s, actor.id, rng)
                    if gold_id is not None:
                        _lease(s, gold_id, actor.id, now, settings.lease_minutes, gold=True)
                        return QueueItem(gold_id, True)
                pivot = None
                if strategy == "random":
                    top = s.scalar(select(func.max(Image.id))) or 0
                    pivot = rng.randint(1, max(top, 1))
                skin_types = _skin_types_by_need(s) if strategy == "fitzpatrick_balance" else ()
                image_id = _candidate(s, actor.id, settings, now, False, pivot, strategy, skin_types) or _candidate(
                    s, actor.id, settings, now, True, pivot, strategy, skin_types
                )
                if image_id is None:
                    return None
                _lease(s, image_id, actor.id, now, settings.lease_minutes, gold=False)
                return QueueItem(image_id, False)
        except IntegrityError:
            continue  # someone leased the same image a moment ago: look again
    raise SkinflowError("the queue is very busy; try again in a moment")


def remaining(wb: Workbench, actor: Actor, now: datetime | None = None) -> int:
    """How many images still need this user (not counting ones leased to others)."""
    require(actor, "annotator", "see the annotation queue")
    settings = get_workflow_settings(wb)
    now = now or utcnow()
    with wb.session() as s:
        leased = ~exists().where(Lease.image_id == Image.id, Lease.user_id != actor.id, Lease.expires_at > now)
        count = s.scalar(select(func.count(Image.id)).where(Image.status == "pending", leased)) or 0
        if settings.overlap > 1:
            mine = exists().where(Annotation.image_id == Image.id, Annotation.user_id == actor.id)
            count += s.scalar(select(func.count(Image.id)).where(_needs_more(settings.overlap), ~mine, leased)) or 0
        return count


def skip(wb: Workbench, actor: Actor, image_id: int, *, reason: str | None = None) -> None:
    """Put the image back for others; this user gets it again only when nothing else is left. `reason` goes
    into the audit trail (the Annotate page skips a picture missing from the store by itself, and says why)."""
    require(actor, "annotator", "skip items")
    with wb.session() as s:
        if s.get(Image, image_id) is None:
            raise NotFound(f"no image #{image_id}")
        s.execute(delete(Lease).where(Lease.image_id == image_id, Lease.user_id == actor.id))
        if s.get(Skip, (actor.id, image_id)) is None:
            s.add(Skip(user_id=actor.id, image_id=image_id))
        audit.record(s, actor, "queue.skip", "image", image_id, **({"reason": reason} if reason else {}))


PREFETCHED = 2  # pictures fetched ahead: the next one, and one more for a skip


def prefetch_next(wb: Workbench, actor: Actor, image_id: int) -> None:
    """Start fetching the pictures this user is likely served after `image_id` (the next pending images in queue
    order that nobody else holds), so a bucket's latency is spent while the person works on this one. Leases
    nothing; a guess that turns out wrong costs one download into the cache."""
    require(actor, "annotator", "take items from the annotation queue")
    with wb.session() as s:
        keys = s.scalars(
            select(Image.file_path)
            .where(
                Image.status == "pending",
                Image.id > image_id,
                Image.file_path.is_not(None),
                *_available(actor.id, utcnow(), False),
            )
            .order_by(Image.id)
            .limit(PREFETCHED)
        ).all()
    wb.images.prefetch(keys)


def open_image(wb: Workbench, actor: Actor, image_id: int, *, now: datetime | None = None) -> QueueItem:
    """A reviewer opens one image by number (the Dataset page's task list), past the queue's order: it is leased
    to them as a queued image would be (unless another person holds it), so nobody else is served it meanwhile."""
    require(actor, "reviewer", "open an image out of queue order")
    now = now or utcnow()
    with wb.session() as s:
        image = s.get(Image, image_id)
        if image is None:
            raise NotFound(f"no image #{image_id}; the Dataset page lists the images there are")
        if image.status == "image_missing":
            raise SkinflowError(
                f"image #{image_id} has no picture yet (status image_missing): fetch it first (skinflow fetch-images)"
            )
        held_by_another = s.scalar(
            select(Lease.user_id).where(Lease.image_id == image_id, Lease.user_id != actor.id, Lease.expires_at > now)
        )
        if held_by_another is None:  # someone working on it keeps it; the reviewer looks (and may annotate) beside them
            _lease(s, image_id, actor.id, now, get_workflow_settings(wb).lease_minutes, gold=False)
        audit.record(s, actor, "queue.open", "image", image_id)
    return QueueItem(image_id, False)


def release(s: Session, user_id: int, image_id: int) -> None:
    """Drop the user's lease on an image (after they submitted it)."""
    s.execute(delete(Lease).where(Lease.image_id == image_id, Lease.user_id == user_id))
