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

Choosing (curation/assist/choice.py): the routed prefill must never lose to the best single source, so each
measure keeps that source unless another is better with probability at least CONFIDENCE. Run verdicts use the same
comparison against the source the rule chooses among the others.

The report is cached in <home>/cache/evidence.json under a fingerprint of what it depends on (drafts,
verified annotations, runs), so pages and commands can ask for it often.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from curation.assist.choice import (
    CONFIDENCE,
    Comparison,
    Items,
    Score,
    best_single_source,
    choose,
    compare,
    score_of,
    smoothed_mean,
)
from curation.store.auth import Actor, require
from curation.store.db import Workbench
from curation.store.models import Annotation, Draft, Export, Image, TrainingRun
from curation.store.workflow import get_workflow_settings
from schema.compare import field_score
from schema.fields import FIELD_KEYS, is_filled
from schema.files import read_jsonl, write_json_atomic
from schema.run_files import HELD_OUT_FILE, Prediction

DIAGNOSIS_MEASURES = ("diagnosis_top1", "diagnosis_top6", "diagnosis_group9")
MODEL_PRODUCER = "skinflow"  # the producer of a trained run's suggestions (assist/suggestions.py)
MEASURES = (*FIELD_KEYS, *DIAGNOSIS_MEASURES)
DEFAULT_MIN_EVIDENCE = 20  # items a source needs on a measure before it can be chosen for it (a team setting)
CACHE_VERSION = 2  # 2: decisions and verdicts are stored with the report


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
    """Whether a run's model beats the source chosen among the others on one measure, on held-out images."""

    measure: str
    verdict: str  # "beats" | "below" | "no clear difference" | "not enough evidence"
    run: Score
    best_other: str | None  # the source the rule chooses among the others, if any has enough evidence
    best_other_score: Score | None
    p_better: float | None = None  # the probability that the run is better than best_other


@dataclass(frozen=True, kw_only=True)
class EvidenceReport:
    sources: list[SourceEvidence]
    chosen: dict[str, str | None]  # measure -> the best source with at least min_evidence items, or None
    min_evidence: int
    verified_images: int
    fingerprint: str = ""
    decisions: dict[str, list[Comparison]] = field(default_factory=dict)  # measure -> the comparisons that chose
    verdicts: dict[int, list[Verdict]] = field(default_factory=dict)  # run id -> per measure
    extra: dict[str, Any] = field(default_factory=dict)

    def run_verdicts(self, run_id: int) -> list[Verdict] | None:
        """Per measure, whether run #run_id's model beats the source chosen among the others (None: no evidence of
        the run)."""
        return self.verdicts.get(run_id)

    def run_ids(self) -> list[int]:
        return sorted(self.verdicts)

    def to_json(self) -> dict[str, Any]:
        """sources with their measures, per measure every source's score and n and the chosen one, and per run
        of this workbench the verdict per measure against the best other source."""
        per_measure = {
            measure: {
                "scores": {
                    e.source: {
                        "mean": e.measures[measure].mean,
                        "n": e.measures[measure].n,
                        "smoothed": round(smoothed_mean(e.measures[measure]), 6),
                    }
                    for e in self.sources
                },
                "chosen": self.chosen[measure],
                "decision": [asdict(c) for c in self.decisions.get(measure, [])],
            }
            for measure in MEASURES
        }
        return {
            "min_evidence": self.min_evidence,
            "verified_images": self.verified_images,
            "sources": {e.source: asdict(e) for e in self.sources},
            "measures": per_measure,
            "runs": {str(run): {v.measure: asdict(v) for v in verdicts} for run, verdicts in self.verdicts.items()},
        }


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
        path = wb.settings.run_dir(run_id) / HELD_OUT_FILE
        if not path.is_file():
            continue
        for row in read_jsonl(path, skip_bad_lines=True):
            try:
                prediction = Prediction.from_json(row)
            except ValueError:  # a row the workbench cannot read is no evidence either way
                continue
            if prediction.id in truth:
                diagnoses = [{"key": d.key, "score": d.score} for d in prediction.diagnoses]
                out[("model", MODEL_PRODUCER, prediction.model_version)][prediction.id] = _HeldOut(prediction.caption, diagnoses)
    return out


def _run_names(session) -> dict[str, int]:
    """The name each run of the registry gives its model versions -> its id: `run-<id>` for runs the app started,
    the run folder's own name for a run trained with `skinflow train` and registered (ops/runs.register_run)."""
    names = {}
    for run_id, config in session.execute(select(TrainingRun.id, TrainingRun.config)):
        names[f"run-{run_id}"] = run_id
        if (config or {}).get("run_name"):
            names[config["run_name"]] = run_id
    return names


def _run_of(version: str, names: dict[str, int]) -> int | None:
    """The registry id of the run a model draft's version names ("run-12:stage2" -> 12); None for models from
    elsewhere."""
    return names.get(version.split(":", 1)[0])


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
        run_names = _run_names(s)
        sources: list[SourceEvidence] = []
        items: dict[str, dict[str, Items]] = {}  # source -> measure -> per-image scores
        for (kind, producer, version), drafts in sorted(newest.items()):
            run_id = _run_of(version, run_names) if kind == "model" else None
            excluded = trained_on.get(run_id, set()) if run_id is not None else set()
            held_out = (
                f"verified images outside the train split of run #{run_id}'s export ({len(excluded)} excluded)"
                if run_id is not None
                else "every verified image (it learned nothing from this workbench)"
            )
            values: dict[str, Items] = {measure: {} for measure in MEASURES}
            writes: set[str] = set()  # the fields this source ever filled
            for image_id, draft in drafts.items():
                if image_id in excluded:
                    continue
                caption, key = truth[image_id]
                if draft.caption is not None:
                    for field_key in FIELD_KEYS:
                        value = draft.caption.get(field_key)
                        writes.update([field_key] if is_filled(value) else [])
                        values[field_key][image_id] = field_score(field_key, value, caption.get(field_key))
                ranked = [d.get("key") for d in draft.diagnoses or [] if d.get("key")]
                if key and key in taxonomy.labels and ranked:
                    values["diagnosis_top1"][image_id] = float(ranked[0] == key)
                    values["diagnosis_top6"][image_id] = float(key in ranked[:6])
                    first = taxonomy.labels.get(ranked[0])
                    same_group = first is not None and first.group9 == taxonomy.labels[key].group9
                    values["diagnosis_group9"][image_id] = float(same_group)
            for field_key in set(FIELD_KEYS) - writes:
                # a source that never fills a field (the probe writes no free text) agrees with every empty truth
                # by saying nothing: that is no evidence, so it is neither chosen for the field nor said to fill it
                values[field_key] = {}
            source = f"{kind}:{producer}:{version}"
            items[source] = values
            sources.append(
                SourceEvidence(
                    source=source,
                    kind=kind,
                    producer=producer,
                    version=version,
                    held_out=held_out,
                    measures={measure: score_of(list(values[measure].values())) for measure in MEASURES},
                )
            )
    chosen, decisions = {}, {}
    best = best_single_source(items, min_evidence)
    for measure in MEASURES:
        prefer = best if measure in FIELD_KEYS else None
        chosen[measure], decisions[measure] = choose({source: v[measure] for source, v in items.items()}, min_evidence, prefer)
    return EvidenceReport(
        sources=sources,
        chosen=chosen,
        min_evidence=min_evidence,
        verified_images=len(truth),
        fingerprint=fingerprint,
        decisions=decisions,
        verdicts=_verdicts(sources, items, min_evidence, run_names),
    )


def _verdicts(
    sources: list[SourceEvidence], items: dict[str, dict[str, Items]], min_evidence: int, run_names: dict[str, int]
) -> dict[int, list[Verdict]]:
    """Per run of this workbench and measure: its model against the source chosen among the others."""
    out = {}
    run_of = {e.source: _run_of(e.version, run_names) for e in sources if e.kind == "model"}
    for run_id in sorted({run for run in run_of.values() if run is not None}):
        mine = [e for e in sources if run_of.get(e.source) == run_id]
        run = max(mine, key=lambda e: sum(score.n for score in e.measures.values()))  # normally one: run-N:stage2
        others = {e.source: e for e in sources if e not in mine}
        best_other = best_single_source({source: items[source] for source in others}, min_evidence)
        verdicts = []
        for measure in MEASURES:
            prefer = best_other if measure in FIELD_KEYS else None
            best, _ = choose({source: items[source][measure] for source in others}, min_evidence, prefer)
            score = run.measures[measure]
            p_better = None
            if score.mean is None or score.n < min_evidence:
                verdict = "not enough evidence"
            elif best is None:
                verdict = "beats"
            else:
                p_better = compare(run.source, items[run.source][measure], best, items[best][measure], min_evidence).p_better
                verdict = "beats" if p_better >= CONFIDENCE else "below" if p_better <= 1 - CONFIDENCE else "no clear difference"
            verdicts.append(
                Verdict(
                    measure=measure,
                    verdict=verdict,
                    run=score,
                    best_other=best,
                    best_other_score=others[best].measures[measure] if best else None,
                    p_better=p_better,
                )
            )
        out[run_id] = verdicts
    return out


def describe_decision(report: EvidenceReport, measure: str) -> str:
    """One line: which source was chosen for `measure` and the comparison that decided it."""
    chosen, steps = report.chosen.get(measure), report.decisions.get(measure, [])
    if chosen is None:
        return f"no source has {report.min_evidence} items yet: fallback order"

    def said(c: Comparison) -> str:
        on = f"{c.n} shared items" if c.paired else f"its own {c.n} items"
        return f"{c.challenger} {c.difference:+.3f} over {c.incumbent} on {on}, P {c.p_better:.2f}"

    parts = [f"replaced: {said(c)}" for c in steps if c.switched]
    parts += [f"kept {chosen}: best challenger {said(c)}" for c in steps if not c.switched]
    return f"{chosen} ({'; '.join(parts) or 'the only source with enough items'})"


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

    def score(v: dict[str, Any] | None) -> Score | None:
        return Score(mean=v["mean"], n=v["n"], ci95=tuple(v["ci95"]) if v["ci95"] else None) if v else None

    return EvidenceReport(
        sources=sources,
        chosen=doc["chosen"],
        min_evidence=doc["min_evidence"],
        verified_images=doc["verified_images"],
        fingerprint=doc["fingerprint"],
        decisions={m: [Comparison(**c) for c in v.get("decision", [])] for m, v in doc["measures"].items()},
        verdicts={
            int(run): [  # in MEASURES order (the cache file's keys are sorted)
                Verdict(**{**v, "run": score(v["run"]), "best_other_score": score(v["best_other_score"])})
                for v in (verdicts[m] for m in MEASURES if m in verdicts)
            ]
            for run, verdicts in doc["runs"].items()
        },
    )
