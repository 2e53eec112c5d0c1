"""Blinded reader study (SkinCLIP-VL's clinician study): experts rate the outputs of two or more sources
(an LLM's draft, a model's suggestion...) on a sample of verified images.

- An admin creates a study: a name, the sources (draft kind + producer + version) and a sample size. The
  items are verified images that have an output from every source, drawn with a seed; each source's output
  is frozen into the item, so drafts added later change nothing.
- A rater (reviewer or admin) gets the items one at a time; the outputs come in an order shuffled per item
  and rater, under anonymous names (Output 1, 2...), and each gets three 1-5 Likert ratings (clinical
  correctness, usefulness, trust) and an optional comment. A rater's rating of an output is stored once.
- Results: per source and scale the mean with a 95% bootstrap interval (items resampled); inter-rater
  agreement (Krippendorff's alpha, ordinal) per scale; for each pair of sources a paired Wilcoxon
  signed-rank test per scale on the per-item means over raters; every rating as CSV.
"""

from __future__ import annotations

import csv
import hashlib
import io
import random
from dataclasses import dataclass
from itertools import combinations
from typing import Any

import krippendorff
import numpy as np
from scipy.stats import wilcoxon
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from curation.errors import ConflictError, NotFound, SkinflowError
from curation.store import audit
from curation.store.auth import Actor, require
from curation.store.db import Workbench
from curation.store.models import DRAFT_KINDS, Draft, Image, ReaderRating, ReaderStudy, ReaderStudyItem, User
from schema.files import neutralise_formula

SCALES = ("correctness", "usefulness", "trust")
BOOTSTRAP = 1000


@dataclass(frozen=True)
class StudyItem:
    item_id: int
    image_id: int
    position: int
    outputs: list[tuple[str, str, dict[str, Any]]]  # (anonymous name, source key, output), in this rater's order


def available_sources(wb: Workbench) -> list[dict[str, Any]]:
    """Draft sources with outputs on verified images: {"key", "kind", "producer", "version", "images"}."""
    with wb.session() as s:
        rows = s.execute(
            select(Draft.kind, Draft.producer, Draft.version, func.count(func.distinct(Draft.image_id)))
            .join(Image, Image.id == Draft.image_id)
            .where(Image.status == "verified", Draft.error.is_(None), Draft.kind.in_(DRAFT_KINDS))
            .group_by(Draft.kind, Draft.producer, Draft.version)
            .order_by(Draft.kind, Draft.producer, Draft.version)
        ).all()
    return [
        {"key": f"{kind}:{producer}:{version}", "kind": kind, "producer": producer, "version": version, "images": n}
        for kind, producer, version, n in rows
    ]


def create_study(wb: Workbench, actor: Actor, name: str, source_keys: list[str], n_items: int, *, seed: int = 0) -> int:
    require(actor, "admin", "create reader studies")
    name = (name or "").strip()
    if not name:
        raise SkinflowError("give the study a name")
    if len(name) > 200:
        raise SkinflowError(f"a study name is at most 200 characters (this one has {len(name)}); shorten it")
    if len(set(source_keys)) < 2:
        raise SkinflowError("a reader study compares at least two sources")
    known = {s["key"]: s for s in available_sources(wb)}
    unknown = [k for k in source_keys if k not in known]
    if unknown:
        raise SkinflowError(f"unknown source(s) {unknown}; sources with outputs on verified images: {', '.join(known) or 'none'}")
    with wb.session() as s:
        if s.scalar(select(ReaderStudy.id).where(ReaderStudy.name == name)) is not None:
            raise ConflictError(f"a reader study named {name!r} exists; choose another name")
        newest: dict[int, dict[str, Draft]] = {}
        for d in s.scalars(
            select(Draft)
            .join(Image, Image.id == Draft.image_id)
            .where(Image.status == "verified", Draft.error.is_(None))
            .order_by(Draft.id)
        ):
            key = f"{d.kind}:{d.producer}:{d.version}"
            if key in source_keys:
                newest.setdefault(d.image_id, {})[key] = d
        eligible = sorted(image_id for image_id, by_source in newest.items() if len(by_source) == len(set(source_keys)))
        if not eligible:
            raise SkinflowError("no verified image has an output from every chosen source")
        sample = sorted(random.Random(seed).sample(eligible, min(n_items, len(eligible))))
        study = ReaderStudy(name=name, sources=[known[k] for k in dict.fromkeys(source_keys)], seed=seed, created_by=actor.id)
        s.add(study)
        s.flush()
        for position, image_id in enumerate(sample):
            outputs = {key: {"caption": d.caption, "diagnoses": list(d.diagnoses or [])} for key, d in newest[image_id].items()}
            s.add(ReaderStudyItem(study_id=study.id, image_id=image_id, position=position, outputs=outputs))
        audit.record(s, actor, "reader_study.create", "reader_study", study.id, name=name, sources=source_keys, items=len(sample))
        return study.id


def list_studies(wb: Workbench, actor: Actor) -> list[dict[str, Any]]:
    require(actor, "reviewer", "see reader studies")
    with wb.session() as s:
        out = []
        for study in s.scalars(select(ReaderStudy).order_by(ReaderStudy.id.desc())):
            items = s.scalar(select(func.count()).select_from(ReaderStudyItem).where(ReaderStudyItem.study_id == study.id))
            ratings = s.scalar(
                select(func.count()).select_from(ReaderRating).join(ReaderStudyItem).where(ReaderStudyItem.study_id == study.id)
            )
            out.append(
                {
                    "id": study.id,
                    "name": study.name,
                    "sources": [x["key"] for x in study.sources],
                    "items": items,
                    "ratings": ratings,
                    "created_at": study.created_at,
                }
            )
        return out


def _order(study_id: int, item_id: int, user_id: int, keys: list[str]) -> list[str]:
    """The outputs' order for one rater on one item: shuffled, stable across reloads, different per rater."""
    digest = hashlib.sha256(f"{study_id}:{item_id}:{user_id}".encode()).digest()
    shuffled = list(keys)
    random.Random(digest).shuffle(shuffled)
    return shuffled


def next_item(wb: Workbench, actor: Actor, study_id: int) -> StudyItem | None:
    """The first item this rater has not rated every output of, or None when done."""
    require(actor, "reviewer", "rate reader-study items")
    with wb.session() as s:
        study = s.get(ReaderStudy, study_id)
        if study is None:
            raise NotFound(f"no reader study #{study_id}")
        keys = [x["key"] for x in study.sources]
        done = {
            item_id
            for item_id, n in s.execute(
                select(ReaderRating.item_id, func.count())
                .join(ReaderStudyItem)
                .where(ReaderStudyItem.study_id == study_id, ReaderRating.user_id == actor.id)
                .group_by(ReaderRating.item_id)
            )
            if n >= len(keys)
        }
        for item in s.scalars(
            select(ReaderStudyItem).where(ReaderStudyItem.study_id == study_id).order_by(ReaderStudyItem.position)
        ):
            if item.id not in done:
                order = _order(study_id, item.id, actor.id, keys)
                return StudyItem(
                    item.id,
                    item.image_id,
                    item.position,
                    [(f"Output {n}", key, item.outputs[key]) for n, key in enumerate(order, 1)],
                )
    return None


def rate_item(wb: Workbench, actor: Actor, item_id: int, ratings: dict[str, dict[str, Any]]) -> None:
    """ratings: source key -> {"correctness", "usefulness", "trust" (1-5), "comment"}; all of an item's outputs at once."""
    require(actor, "reviewer", "rate reader-study items")
    with wb.session() as s:
        item = s.get(ReaderStudyItem, item_id)
        if item is None:
            raise NotFound(f"no reader-study item #{item_id}")
        if set(ratings) != set(item.outputs):
            raise SkinflowError("rate every output of the item (and only those)")
        for key, values in ratings.items():
            for scale in SCALES:
                value = values.get(scale)
                if not isinstance(value, int) or not 1 <= value <= 5:
                    raise SkinflowError(f"{scale} must be a whole number from 1 to 5")
            comment = (values.get("comment") or "").strip()[:2000] or None
            s.add(
                ReaderRating(
                    item_id=item_id,
                    user_id=actor.id,
                    source_key=key,
                    comment=comment,
                    **{scale: values[scale] for scale in SCALES},
                )
            )
        try:
            s.flush()
        except IntegrityError:
            raise ConflictError("you rated this item already") from None
        audit.record(s, actor, "reader_study.rate", "reader_study_item", item_id)


def ratings_table(wb: Workbench, actor: Actor, study_id: int) -> list[dict[str, Any]]:
    require(actor, "reviewer", "see reader-study results")
    with wb.session() as s:
        rows = s.execute(
            select(ReaderStudyItem.image_id, ReaderStudyItem.id, User.username, ReaderRating)
            .join(ReaderRating, ReaderRating.item_id == ReaderStudyItem.id)
            .join(User, User.id == ReaderRating.user_id)
            .where(ReaderStudyItem.study_id == study_id)
            .order_by(ReaderStudyItem.position, User.username)
        ).all()
        return [
            {
                "image_id": image_id,
                "item_id": item_id,
                "rater": rater,
                "source": r.source_key,
                **{scale: getattr(r, scale) for scale in SCALES},
                "comment": r.comment or "",
            }
            for image_id, item_id, rater, r in rows
        ]


def summarise(ratings: list[dict[str, Any]], sources: list[str], *, seed: int = 0) -> dict[str, Any]:
    """Means with bootstrap CIs, Krippendorff's alpha per scale, paired Wilcoxon tests (a pure function of
    the ratings table, for the golden tests)."""
    items = sorted({r["item_id"] for r in ratings})
    raters = sorted({r["rater"] for r in ratings})
    per_item: dict[str, dict[str, np.ndarray]] = {}  # scale -> source -> per-item mean over raters (nan if unrated)
    for scale in SCALES:
        per_item[scale] = {}
        for source in sources:
            values = []
            for item in items:
                given = [r[scale] for r in ratings if r["item_id"] == item and r["source"] == source]
                values.append(float(np.mean(given)) if given else np.nan)
            per_item[scale][source] = np.array(values)
    rng = np.random.default_rng(seed)
    means: dict[str, dict[str, Any]] = {}
    for scale in SCALES:
        means[scale] = {}
        for source in sources:
            x = per_item[scale][source][~np.isnan(per_item[scale][source])]
            if x.size == 0:
                means[scale][source] = {"mean": None, "ci95": None, "n_items": 0}
                continue
            boot = [float(x[rng.integers(0, x.size, x.size)].mean()) for _ in range(BOOTSTRAP)]
            means[scale][source] = {
                "mean": float(x.mean()),
                "ci95": (float(np.percentile(boot, 2.5)), float(np.percentile(boot, 97.5))),
                "n_items": int(x.size),
            }
    agreement = {}
    for scale in SCALES:
        units = [(item, source) for item in items for source in sources]
        matrix = np.full((len(raters), len(units)), np.nan)
        for r in ratings:
            matrix[raters.index(r["rater"]), units.index((r["item_id"], r["source"]))] = r[scale]
        rated_twice = (~np.isnan(matrix)).sum(axis=0) >= 2
        values = matrix[~np.isnan(matrix)]
        if len(raters) < 2 or rated_twice.sum() < 1 or np.unique(values).size < 2:
            agreement[scale] = None  # alpha is undefined without two raters on a unit and some variation
        else:
            agreement[scale] = float(krippendorff.alpha(reliability_data=matrix, level_of_measurement="ordinal"))
    tests = []
    for a, b in combinations(sources, 2):
        for scale in SCALES:
            x, y = per_item[scale][a], per_item[scale][b]
            both = ~np.isnan(x) & ~np.isnan(y)
            differences = (y - x)[both]
            if differences.size == 0 or np.all(differences == 0):
                p, statistic = 1.0, 0.0
            else:
                result = wilcoxon(x[both], y[both], zero_method="wilcox", alternative="two-sided")
                p, statistic = float(result.pvalue), float(result.statistic)
            tests.append(
                {
                    "a": a,
                    "b": b,
                    "scale": scale,
                    "n_items": int(both.sum()),
                    "mean_difference": float(differences.mean()) if differences.size else None,
                    "wilcoxon_statistic": statistic,
                    "p_value": p,
                }
            )
    return {"items": len(items), "raters": raters, "means": means, "krippendorff_alpha": agreement, "wilcoxon": tests}


def study_results(wb: Workbench, actor: Actor, study_id: int) -> dict[str, Any]:
    require(actor, "reviewer", "see reader-study results")
    with wb.session() as s:
        study = s.get(ReaderStudy, study_id)
        if study is None:
            raise NotFound(f"no reader study #{study_id}")
        sources = [x["key"] for x in study.sources]
    return {"study": study_id, "sources": sources, **summarise(ratings_table(wb, actor, study_id), sources)}


def ratings_csv(wb: Workbench, actor: Actor, study_id: int) -> str:
    rows = ratings_table(wb, actor, study_id)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=["image_id", "item_id", "rater", "source", *SCALES, "comment"])
    writer.writeheader()
    for row in rows:  # a comment is free text: neutralise spreadsheet formulas as the CSV export does
        writer.writerow({**row, "comment": neutralise_formula(row["comment"])})
    return buffer.getvalue()
