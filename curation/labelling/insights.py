"""Numbers for the Insights page and `skinflow status --json`: progress, throughput, distributions,
per-field agreement (Krippendorff's alpha; Cohen's kappa for annotator pairs) and gold accuracy."""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from itertools import combinations
from typing import Any

import krippendorff
import numpy as np
from sqlalchemy import func, select

from curation.store.auth import Actor, require
from curation.store.db import Workbench
from curation.store.models import Annotation, Draft, DraftKind, GoldAssignment, Image, Review, User
from schema.caption import Caption
from schema.compare import caption_scores
from schema.fields import FIELD_BY_KEY, FIELD_KEYS, ORDINAL_VALUES


def cohen_kappa(a: list[str], b: list[str]) -> float | None:
    """Cohen's kappa of two raters over the same items (None when undefined)."""
    n = len(a)
    if n == 0:
        return None
    observed = sum(x == y for x, y in zip(a, b, strict=True)) / n
    ca, cb = Counter(a), Counter(b)
    expected = sum(ca[k] * cb[k] for k in ca) / (n * n)
    return None if expected == 1 else (observed - expected) / (1 - expected)


def _field_value(caption: dict, key: str) -> str | None:
    value = caption.get(key)
    if FIELD_BY_KEY[key].kind == "multi":
        return "|".join(value) if value else ""
    return value or ""


def field_alpha(units: list[dict[str, str]], key: str) -> float | None:
    """Krippendorff's alpha for one field: units are {annotator: value}; ordinal fields use the ordinal metric."""
    raters = sorted({r for unit in units for r in unit})
    if len(units) < 2 or len(raters) < 2:
        return None
    if key in ORDINAL_VALUES:
        scale = {"": np.nan, **{v: float(i) for i, v in enumerate(ORDINAL_VALUES[key])}}
        data = [[scale.get(unit.get(r, ""), np.nan) if r in unit else np.nan for unit in units] for r in raters]
        level = "ordinal"
    else:
        codes: dict[str, float] = {}
        data = [[codes.setdefault(unit[r], float(len(codes))) if r in unit else np.nan for unit in units] for r in raters]
        level = "nominal"
    matrix = np.array(data, dtype=float)
    if not (np.sum(~np.isnan(matrix), axis=0) >= 2).any():
        return None  # no item with two or more values: nothing to agree on
    values = matrix[~np.isnan(matrix)]
    if len(np.unique(values)) < 2:
        return 1.0  # everyone always said the same: perfect (alpha is undefined with one value)
    return float(krippendorff.alpha(reliability_data=matrix, level_of_measurement=level))


def edit_rates(annotations: list, prefills: dict[int, Any]) -> dict[str, Any]:
    """How often annotators change what they started from, per field and per source kind (model
    suggestion, LLM draft, synthetic draft, the routed best-source prefill): the share of submitted first
    versions whose field differs from the prefilled draft (field score below 1), and how often the diagnosis
    differs from the draft's top-1.
    A falling rate for `model` means the model is helping."""
    out: dict[str, Any] = {}
    for kind in DraftKind:  # routed: the best-source prefill
        rows = [
            (a, prefills[a.based_on_draft_id])
            for a in annotations
            if a.supersedes_id is None
            and a.based_on_draft_id in prefills
            and prefills[a.based_on_draft_id].kind == kind
            and prefills[a.based_on_draft_id].caption is not None
        ]
        if not rows:
            continue
        changed = Counter()
        diagnosis_changed = 0
        for annotation, draft in rows:
            scores = caption_scores(Caption.model_validate(draft.caption), Caption.model_validate(annotation.caption))
            changed.update(key for key, score in scores.items() if score < 1.0)
            top = (draft.diagnoses or [{}])[0].get("key")
            diagnosis_changed += top is not None and top != annotation.diagnosis_key
        out[kind] = {
            "annotations": len(rows),
            "fields": {key: round(changed[key] / len(rows), 3) for key in FIELD_KEYS},
            "diagnosis": round(diagnosis_changed / len(rows), 3),
        }
    return out


def team_insights(wb: Workbench, actor: Actor) -> dict[str, Any]:
    """insights() for a person (the Insights page, `skinflow status --json`): per-annotator numbers are for
    reviewers and admins."""
    require(actor, "reviewer", "see the team's insights")
    return insights(wb)


def insights(wb: Workbench) -> dict[str, Any]:
    taxonomy = wb.taxonomy
    with wb.session() as s:
        users = dict(s.execute(select(User.id, User.username)).all())
        annotations = s.execute(
            select(
                Annotation.id,
                Annotation.image_id,
                Annotation.user_id,
                Annotation.supersedes_id,
                Annotation.caption,
                Annotation.diagnosis_key,
                Annotation.diagnosis_text,
                Annotation.seconds_spent,
                Annotation.created_at,
                Annotation.based_on_draft_id,
            )
        ).all()
        draft_ids = {a.based_on_draft_id for a in annotations if a.based_on_draft_id}
        prefills = {
            d.id: d
            for d in s.execute(select(Draft.id, Draft.kind, Draft.caption, Draft.diagnoses).where(Draft.id.in_(draft_ids)))
        }
        reviews = s.execute(select(Review.created_at).where(Review.decision == "verified")).all()
        verified = dict(s.execute(select(Image.id, Image.verified_annotation_id).where(Image.status == "verified")).all())
        labels = s.execute(select(Image.diagnosis_key, Image.fitzpatrick, Image.status)).all()
        gold = s.execute(select(GoldAssignment.user_id, GoldAssignment.image_id)).all()
        n_images = s.scalar(select(func.count(Image.id))) or 0

    per_day: dict[str, dict[str, int]] = defaultdict(lambda: {"annotations": 0, "verified": 0})
    for a in annotations:
        per_day[str(a.created_at)[:10]]["annotations"] += 1
    for (when,) in reviews:
        per_day[str(when)[:10]]["verified"] += 1

    throughput: dict[str, dict[str, Any]] = {}
    by_user: dict[int, list] = defaultdict(list)
    for a in annotations:
        by_user[a.user_id].append(a)
    for user_id, rows in sorted(by_user.items()):
        seconds = [r.seconds_spent for r in rows if r.seconds_spent]
        throughput[users[user_id]] = {
            "annotations": len(rows),
            "images": len({r.image_id for r in rows}),
            "median_seconds": round(statistics.median(seconds), 1) if seconds else None,
        }

    distributions = {
        "label": Counter(k or "unknown" for k, _, _ in labels),
        "group9": Counter(taxonomy.labels[k].group9 if k in taxonomy.labels else "unknown" for k, _, _ in labels),
        "group3": Counter(taxonomy.labels[k].group3 if k in taxonomy.labels else "unknown" for k, _, _ in labels),
        "fitzpatrick": Counter(str(f) if f else "unknown" for _, f, _ in labels),
    }

    # agreement: the newest version of each annotator's chain, on images with two or more annotators
    superseded = {a.supersedes_id for a in annotations if a.supersedes_id}
    heads: dict[int, dict[str, Any]] = defaultdict(dict)
    for a in annotations:
        if a.id not in superseded:
            heads[a.image_id][users[a.user_id]] = a
    shared = {image: people for image, people in heads.items() if len(people) >= 2}
    agreement = {}
    for key in FIELD_KEYS:
        units = [{who: _field_value(a.caption, key) for who, a in people.items()} for people in shared.values()]
        agreement[key] = field_alpha(units, key)
    diagnosis_units = [
        {who: (a.diagnosis_key or a.diagnosis_text or "") for who, a in people.items()} for people in shared.values()
    ]
    kappas = {}
    raters = sorted({who for people in shared.values() for who in people})
    for r1, r2 in combinations(raters, 2):
        both = [u for u in diagnosis_units if r1 in u and r2 in u]
        if both:
            kappa = cohen_kappa([u[r1] for u in both], [u[r2] for u in both])
            kappas[f"{r1} vs {r2}"] = {"items": len(both), "kappa": None if kappa is None else round(kappa, 3)}

    # gold: each annotator's head annotation on gold items against the verified record
    by_id = {a.id: a for a in annotations}
    gold_scores: dict[str, dict[str, list]] = defaultdict(lambda: {"label": [], "caption": []})
    for user_id, image_id in gold:
        mine = heads.get(image_id, {}).get(users[user_id])
        truth = by_id.get(verified.get(image_id))
        if mine is None or truth is None or mine.id == truth.id:
            continue
        gold_scores[users[user_id]]["label"].append(
            (mine.diagnosis_key or mine.diagnosis_text) == (truth.diagnosis_key or truth.diagnosis_text)
        )
        scores = caption_scores(Caption.model_validate(mine.caption), Caption.model_validate(truth.caption))
        gold_scores[users[user_id]]["caption"].append(sum(scores.values()) / len(scores))
    gold_accuracy = {
        who: {
            "items": len(v["label"]),
            "label_accuracy": round(sum(v["label"]) / len(v["label"]), 3),
            "mean_field_score": round(sum(v["caption"]) / len(v["caption"]), 3),
        }
        for who, v in sorted(gold_scores.items())
        if v["label"]
    }
    return {
        "edit_rates": edit_rates(annotations, prefills),
        "images": n_images,
        "verified": sum(1 for *_, status in labels if status == "verified"),
        "progress_by_day": dict(sorted(per_day.items())),
        "throughput": throughput,
        "distributions": {k: dict(v.most_common()) for k, v in distributions.items()},
        "agreement": {
            "items_with_2_or_more_annotators": len(shared),
            "krippendorff_alpha": agreement,
            "cohen_kappa_diagnosis": kappas,
        },
        "gold_accuracy": gold_accuracy,
    }
