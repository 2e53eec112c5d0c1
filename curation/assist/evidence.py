"""Who to trust for what: how well each draft source agrees with the verified annotations, field by field,
on images it did not learn from.

A source is one (kind, producer, version) of drafts: an LLM model with a prompt version, a trained run's
model (`run-<id>:stage<n>`), the demo's synthetic drafts, an imported prediction file. For each caption field
the measure is the mean field score (schema.compare.field_score) of the source's newest usable draft against
the verified annotation; for the diagnosis, top-1 and top-6 exact accuracy and top-1 nine-group accuracy
against the verified diagnosis (images verified with a taxonomy key). Each comes with its number of items and
a 95% interval (percentile bootstrap, 1,000 resamples, seed 0; a normal interval past BOOTSTRAP_MAX_N items).

Held out: a run trained by this workbench learned from the train split of the export it was made from, so
those images do not count for its models; everything else (the export's val and test images, images
verified after it) does. Other sources learned nothing from this workbench: every verified image counts.
Annotators who started from a source's draft may lean towards it (anchoring): read small gaps with care.

Choosing: per measure the chosen source is the one with the highest *smoothed* mean, (sum + 1) / (n + 2) (one
pseudo-item scoring 0 and one scoring 1 added), among those with at least min_evidence items. The smoothing
only matters where a small sample sits at an extreme: 21 of 21 right (0.957) does not outrank 138 of 141
(0.972), which the raw means would let it do on luck. Run verdicts compare the same smoothed means.

The report is cached in <home>/cache/evidence.json under a fingerprint of what it depends on (drafts,
verified annotations, runs), so pages and commands can ask for it often.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import func, select

from curation.labelling.workflow import get_workflow_settings
from curation.ops.runs import run_dir
from curation.store.auth import Actor, require
from curation.store.db import Workbench
from curation.store.models import Annotation, Draft, Export, Image, TrainingRun
from schema.compare import field_score
from schema.fields import FIELD_KEYS, is_filled
from schema.files import read_jsonl, write_json_atomic

DIAGNOSIS_MEASURES = ("diagnosis_top1", "diagnosis_top6", "diagnosis_group9")
HELD_OUT_FILE = "held_out_predictions.jsonl"  # written by the trainer in a run folder (trainer/predict.py)
MODEL_PRODUCER = "skinflow"  # the producer of a trained run's suggestions (assist/suggestions.py)
MEASURES = (*FIELD_KEYS, *DIAGNOSIS_MEASURES)
DEFAULT_MIN_EVIDENCE = 20  # items a source needs on a measure before it can be chosen for it (a team setting)
BOOTSTRAP_RESAMPLES = 1000
BOOTSTRAP_MAX_N = 2000  # above this many items the normal interval is used (the bootstrap would cost seconds)
CACHE_VERSION = 1


@dataclass(frozen=True, kw_only=True)
class Score:
    mean: float | None
    n: int
    ci95: tuple[float, float] | None


def ranking_score(score: Score) -> float:
    """The smoothed mean sources are ranked by (see the module docstring)."""
    return ((score.mean or 0.0) * score.n + 1) / (score.n + 2)


@dataclass(frozen=True, kw_only=True)
class SourceEvidence:
    source: str  # "kind:producer:version"
    kind: str
    producer: str
    version: str
    held_out: str  # which verified images count, in words
    measures: dict[str, Score]


@dataclass(frozen=True, kw_only=True)
class Verdict:
    """Whether a run's model beats the best other source on one measure, on held-out images."""

    measure: str
    verdict: str  # "beats" | "below" | "not enough evidence"
    run: Score
    best_other: str | None  # the best other source with enough evidence, if any
    best_other_score: Score | None


@dataclass(frozen=True, kw_only=True)
class EvidenceReport:
    sources: list[SourceEvidence]
    chosen: dict[str, str | None]  # measure -> the best source with at least min_evidence items, or None
    min_evidence: int
    verified_images: int
    fingerprint: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def run_verdicts(self, run_id: int) -> list[Verdict] | None:
        """Per measure, whether run #run_id's model beats the best other source (None: no evidence of the run)."""
        mine = [e for e in self.sources if e.kind == "model" and _run_of(e.version) == run_id]
        if not mine:
            return None
        run = max(mine, key=lambda e: sum(score.n for score in e.measures.values()))  # normally one: run-N:stage2
        others = [e for e in self.sources if e not in mine]
        verdicts = []
        for measure in MEASURES:
            eligible = [e for e in others if e.measures[measure].n >= self.min_evidence and e.measures[measure].mean is not None]
            best = max(eligible, key=lambda e: ranking_score(e.measures[measure])) if eligible else None
            score = run.measures[measure]
            if score.mean is None or score.n < self.min_evidence:
                verdict = "not enough evidence"
            elif best is None or ranking_score(score) > ranking_score(best.measures[measure]):
                verdict = "beats"
            else:
                verdict = "below"
            verdicts.append(
                Verdict(
                    measure=measure,
                    verdict=verdict,
                    run=score,
                    best_other=best.source if best else None,
                    best_other_score=best.measures[measure] if best else None,
                )
            )
        return verdicts

    def run_ids(self) -> list[int]:
        return sorted({run for e in self.sources if e.kind == "model" and (run := _run_of(e.version)) is not None})

    def to_json(self) -> dict[str, Any]:
        """sources with their measures, per measure every source's score and n and the chosen one, and per run
        of this workbench the verdict per measure against the best other source."""
        per_measure = {
            measure: {
                "scores": {
                    e.source: {
                        "mean": e.measures[measure].mean,
                        "n": e.measures[measure].n,
                        "ranked_by": round(ranking_score(e.measures[measure]), 6),
                    }
                    for e in self.sources
                },
                "chosen": self.chosen[measure],
            }
            for measure in MEASURES
        }
        return {
            "min_evidence": self.min_evidence,
            "verified_images": self.verified_images,
            "sources": {e.source: asdict(e) for e in self.sources},
            "measures": per_measure,
            "runs": {str(run): {v.measure: asdict(v) for v in self.run_verdicts(run) or []} for run in self.run_ids()},
        }


def interval(values: np.ndarray) -> tuple[float, float] | None:
    """95% interval of the mean: percentile bootstrap (seed 0), or the normal interval for large samples."""
    n = len(values)
    if n == 0:
        return None
    if n > BOOTSTRAP_MAX_N:
        half = 1.96 * float(values.std(ddof=1)) / math.sqrt(n)
        return (float(values.mean()) - half, float(values.mean()) + half)
    rng = np.random.default_rng(0)
    means = values[rng.integers(0, n, size=(BOOTSTRAP_RESAMPLES, n))].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return (float(low), float(high))


def _score(values: list[float]) -> Score:
    array = np.asarray(values, dtype=float)
    return Score(mean=float(array.mean()) if len(array) else None, n=len(array), ci95=interval(array))


def _training_images(wb: Workbench, session) -> dict[int, set[int]]:
    """run id -> ids of the images in the train split of the export it was trained on (from its records)."""
    out: dict[int, set[int]] = {}
    runs = session.execute(
        select(TrainingRun.id, TrainingRun.config, Export.path).outerjoin(Export, Export.id == TrainingRun.export_id)
    )
    for run_id, config, export_path in runs:
        folder = Path((config or {}).get("export_path") or export_path or "")
        records = folder / "records.jsonl"
        if records.is_file():
            out[run_id] = {r["id"] for r in read_jsonl(records, skip_bad_lines=True) if r.get("split") == "train"}
    return out


@dataclass(frozen=True)
class _HeldOut:
    """A held-out prediction of a finished run, read like a draft."""

    caption: dict[str, Any] | None
    diagnoses: list[dict[str, Any]]


def _held_out_items(wb: Workbench, session, truth: dict[int, Any]) -> dict[tuple[str, str, str], dict[int, _HeldOut]]:
    """What finished runs predicted on their export's val and test images (the trainer writes
    <run>/held_out_predictions.jsonl): a run's evidence before any of its suggestions exists."""
    out: dict[tuple[str, str, str], dict[int, _HeldOut]] = defaultdict(dict)
    for (run_id,) in session.execute(select(TrainingRun.id).where(TrainingRun.status == "done")):
        path = run_dir(wb, run_id) / HELD_OUT_FILE
        if not path.is_file():
            continue
        for row in read_jsonl(path, skip_bad_lines=True):
            if isinstance(row.get("id"), int) and row["id"] in truth and row.get("model_version"):
                diagnoses = [{"key": d.get("key"), "score": d.get("score")} for d in row.get("diagnoses") or []]
                out[("model", MODEL_PRODUCER, row["model_version"])][row["id"]] = _HeldOut(row.get("caption"), diagnoses)
    return out


def _run_of(version: str) -> int | None:
    """The run id of a model draft's version ("run-12:stage2" -> 12); None for models from elsewhere."""
    head = version.split(":", 1)[0]
    return int(head[4:]) if head.startswith("run-") and head[4:].isdigit() else None


def _fingerprint(session) -> str:
    drafts = session.execute(select(func.count(Draft.id), func.max(Draft.id))).one()
    verified = session.execute(
        select(func.count(Image.id), func.sum(Image.verified_annotation_id)).where(Image.verified_annotation_id.is_not(None))
    ).one()
    runs = session.execute(select(func.count(TrainingRun.id), func.max(TrainingRun.id))).one()
    return json.dumps([CACHE_VERSION, *drafts, *verified, *runs], default=str)


def compute_evidence(wb: Workbench, *, min_evidence: int = DEFAULT_MIN_EVIDENCE) -> EvidenceReport:
    """The report from the database as it is now (no cache); see the module docstring."""
    taxonomy = wb.taxonomy
    with wb.session() as s:
        fingerprint = _fingerprint(s)
        truth = {
            image_id: (caption or {}, key)
            for image_id, caption, key in s.execute(
                select(Image.id, Annotation.caption, Annotation.diagnosis_key).join(
                    Annotation, Annotation.id == Image.verified_annotation_id
                )
            )
        }
        newest: dict[tuple[str, str, str], dict[int, Any]] = defaultdict(dict)
        for source, items in _held_out_items(wb, s, truth).items():
            newest[source].update(items)
        # routed drafts are made from these sources: not a source of their own here
        usable = select(Draft).where(Draft.image_id.in_(list(truth)), Draft.error.is_(None), Draft.kind != "routed")
        for draft in s.scalars(usable.order_by(Draft.id)):
            newest[(draft.kind, draft.producer, draft.version)][draft.image_id] = draft  # a stored draft, the newest, wins
        trained_on = _training_images(wb, s)
        sources = []
        for (kind, producer, version), drafts in sorted(newest.items()):
            run_id = _run_of(version) if kind == "model" else None
            excluded = trained_on.get(run_id, set()) if run_id is not None else set()
            held_out = (
                f"verified images outside the train split of run #{run_id}'s export ({len(excluded)} excluded)"
                if run_id is not None
                else "every verified image (it learned nothing from this workbench)"
            )
            values: dict[str, list[float]] = {measure: [] for measure in MEASURES}
            writes: set[str] = set()  # the fields this source ever filled
            for image_id, draft in drafts.items():
                if image_id in excluded:
                    continue
                caption, key = truth[image_id]
                if draft.caption is not None:
                    for field_key in FIELD_KEYS:
                        value = draft.caption.get(field_key)
                        writes.update([field_key] if is_filled(value) else [])
                        values[field_key].append(field_score(field_key, value, caption.get(field_key)))
                ranked = [d.get("key") for d in draft.diagnoses or [] if d.get("key")]
                if key and key in taxonomy.labels and ranked:
                    values["diagnosis_top1"].append(float(ranked[0] == key))
                    values["diagnosis_top6"].append(float(key in ranked[:6]))
                    first = taxonomy.labels.get(ranked[0])
                    values["diagnosis_group9"].append(float(first is not None and first.group9 == taxonomy.labels[key].group9))
            for field_key in set(FIELD_KEYS) - writes:
                # a source that never fills a field (the probe writes no free text) agrees with every empty truth
                # by saying nothing: that is no evidence, so it is neither chosen for the field nor said to fill it
                values[field_key] = []
            sources.append(
                SourceEvidence(
                    source=f"{kind}:{producer}:{version}",
                    kind=kind,
                    producer=producer,
                    version=version,
                    held_out=held_out,
                    measures={measure: _score(values[measure]) for measure in MEASURES},
                )
            )
    chosen = {}
    for measure in MEASURES:
        eligible = [e for e in sources if e.measures[measure].n >= min_evidence and e.measures[measure].mean is not None]
        chosen[measure] = max(eligible, key=lambda e: ranking_score(e.measures[measure])).source if eligible else None
    return EvidenceReport(
        sources=sources, chosen=chosen, min_evidence=min_evidence, verified_images=len(truth), fingerprint=fingerprint
    )


def _cache(wb: Workbench) -> Path:
    return wb.settings.home / "cache" / "evidence.json"


def cached_evidence(wb: Workbench) -> EvidenceReport | None:
    """The last report computed (whatever has changed since), or None: what the Annotate page routes with,
    so an annotator's click never waits for a recomputation."""
    try:
        return _from_json(json.loads(_cache(wb).read_text(encoding="utf-8")))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def refresh_evidence(wb: Workbench, *, min_evidence: int | None = None) -> EvidenceReport:
    """The report as of now, from the cache when nothing it depends on has changed, else computed and cached.
    Called after drafting runs and suggestion imports (new sources) and by the pages and commands that show it."""
    if min_evidence is None:
        min_evidence = get_workflow_settings(wb).min_evidence
    with wb.session() as s:
        fingerprint = _fingerprint(s)
    cached = cached_evidence(wb)
    if cached is not None and cached.fingerprint == fingerprint and cached.min_evidence == min_evidence:
        return cached
    report = compute_evidence(wb, min_evidence=min_evidence)
    write_json_atomic(_cache(wb), {**report.to_json(), "fingerprint": report.fingerprint, "chosen": report.chosen})
    return report


def source_evidence(wb: Workbench, actor: Actor, *, min_evidence: int | None = None) -> EvidenceReport:
    """The report for a reviewer or admin (refresh_evidence). min_evidence: the team's setting unless given."""
    require(actor, "reviewer", "see the evidence per source")
    return refresh_evidence(wb, min_evidence=min_evidence)


def _from_json(doc: dict[str, Any]) -> EvidenceReport:
    sources = [
        SourceEvidence(
            **{
                **entry,
                "measures": {
                    m: Score(mean=v["mean"], n=v["n"], ci95=tuple(v["ci95"]) if v["ci95"] else None)
                    for m, v in entry["measures"].items()
                },
            }
        )
        for entry in doc["sources"].values()
    ]
    return EvidenceReport(
        sources=sources,
        chosen=doc["chosen"],
        min_evidence=doc["min_evidence"],
        verified_images=doc["verified_images"],
        fingerprint=doc["fingerprint"],
    )
