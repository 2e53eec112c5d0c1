"""Best-source prefill: each caption field from the draft source that agrees best with verified annotations on
images it did not learn from (assist/evidence.py), the diagnoses merged across sources.

For an image with usable drafts from two or more sources, the routed draft takes each field from the source the
evidence chose for it (`chosen`, see assist/evidence.py) when that source drafted this image, also when its answer
is to leave the field empty; otherwise from the first source in today's order (model suggestion, LLM, synthetic;
newest first) that filled it. An empty field is credited to nobody. Its
diagnoses are every source's ranked diagnoses merged: each entry weighs its own score times its source's held-out
top-1 accuracy, summed per label, best first; a source with fewer than min_evidence held-out items weighs 0.5
while no source has earned the diagnosis, 0 once one has (it cannot reorder a proven source's list).

It is stored as a draft like any other (kind `routed`, producer `router`, version = the evidence snapshot), with
the source of every field in its meta, so edit rates, reader studies and the form treat it as a source of its own.
The Annotate page uses the evidence snapshot last computed (by `skinflow sources`, the Insights page, or after
drafting and suggestion imports), never recomputing it on an annotator's click.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from curation.assist.evidence import EvidenceReport, cached_evidence
from curation.store import audit
from curation.store.db import Workbench
from curation.store.models import Draft, DraftKind, Image
from schema.fields import FIELD_KEYS, is_filled

ROUTED_KIND, ROUTER = DraftKind.ROUTED, "router"
NO_EVIDENCE_WEIGHT = 0.5


def source_of(draft: Draft) -> str:
    return f"{draft.kind}:{draft.producer}:{draft.version}"


@dataclass(frozen=True)
class Routed:
    """What routing makes of an image's drafts: the prefill caption, the merged diagnoses and where each field came
    from."""

    caption: dict[str, Any]
    diagnoses: list[dict[str, Any]]  # [{"key", "score"}], best first: every source's votes weighted by its accuracy
    fields: dict[str, str]  # field -> the source ("kind:producer:version") its value came from


def route(drafts: list[Draft], report: EvidenceReport | None) -> Routed:
    """The routed prefill of an image's usable drafts, one per source."""
    ordered = sorted(drafts, key=lambda d: (DraftKind(d.kind).rank, -d.id))  # DraftKind's order, newest first
    by_source = {source_of(d): d for d in reversed(ordered)}  # the first in order wins a source's slot
    chosen = report.chosen if report else {}
    caption: dict[str, Any] = {}
    fields: dict[str, str] = {}
    for key in FIELD_KEYS:
        winner = by_source.get(chosen.get(key) or "")
        if winner is not None and winner.caption is not None:
            # the evidence's winner drafted this image: its answer stands, also when it is "nothing here" (a
            # benchmark found empty answers replaced by another source's wrong term: texture 0.31 -> 0.56 edits)
            value = winner.caption.get(key)
            caption[key] = value if is_filled(value) else None
            if is_filled(value):
                fields[key] = source_of(winner)
            continue
        # no winner, or it did not draft this image: today's order, from a draft that says something here (a source
        # that wrote nothing for a field is never chosen for it nor credited with its empty box)
        filled = [d for d in ordered if d.caption and is_filled(d.caption.get(key))]
        caption[key] = filled[0].caption.get(key) if filled else None
        if filled:
            fields[key] = source_of(filled[0])
    size_source = by_source.get(fields.get("size", ""))
    if size_source is not None and size_source.caption.get("size_mm") is not None:
        caption["size_mm"] = size_source.caption["size_mm"]  # the measurement travels with its band
    accuracy = {e.source: e.measures["diagnosis_top1"] for e in report.sources} if report else {}
    # once a source has earned the diagnosis (chosen for top-1), a source without evidence no longer reorders its
    # list: at 0.5 an unproven model outweighed a proven VLM right 45% of the time (a benchmark round: top-1 worse)
    unproven = 0.0 if chosen.get("diagnosis_top1") in by_source else NO_EVIDENCE_WEIGHT
    votes: dict[str, float] = defaultdict(float)
    for source, draft in by_source.items():
        held_out = accuracy.get(source)
        proven = held_out is not None and held_out.mean is not None and held_out.n >= (report.min_evidence if report else 1)
        weight = held_out.mean if proven else unproven
        for entry in draft.diagnoses or []:
            if entry.get("key"):
                votes[entry["key"]] += weight * float(entry.get("score") or 0.0)
    diagnoses = [{"key": key, "score": round(score, 6)} for key, score in sorted(votes.items(), key=lambda kv: -kv[1])[:6]]
    return Routed(caption, diagnoses, fields)


def snapshot_version(report: EvidenceReport | None) -> str:
    if report is None:
        return "no-evidence"
    digest = hashlib.sha256(f"{report.fingerprint}|{report.min_evidence}".encode()).hexdigest()[:12]
    return f"evidence-{digest}"


def ensure_routed_draft(session: Session, wb: Workbench, image: Image) -> Draft | None:
    """The image's routed draft under the current evidence snapshot, made now if missing or older than the
    drafts it combines; None when fewer than two sources drafted the image."""
    usable = [d for d in image.drafts if d.kind != ROUTED_KIND and d.caption is not None and not d.error]
    if len({source_of(d) for d in usable}) < 2:
        return None
    report = cached_evidence(wb)
    version = snapshot_version(report)
    newest_input = max(d.id for d in usable)
    for draft in image.drafts:
        if draft.kind == ROUTED_KIND and draft.version == version and draft.id > newest_input:
            return draft
    routed = route(usable, report)
    fields = routed.fields
    by_source = {source_of(d): d for d in sorted(usable, key=lambda d: d.id)}  # the newest per source
    notes = [  # what salvage did to each field in the draft it came from, and the keys it ignored there
        note
        for source in dict.fromkeys(fields.values())
        for note in ((by_source[source].meta or {}).get("salvage") or [])
        if fields.get(note.get("field")) == source
        or (note.get("field") == "size_mm" and fields.get("size") == source)
        or note.get("field") not in (*FIELD_KEYS, "size_mm")
    ]
    draft = Draft(
        image_id=image.id,
        kind=ROUTED_KIND,
        producer=ROUTER,
        version=version,
        caption=routed.caption,
        diagnoses=routed.diagnoses,
        meta={"fields": fields, **({"salvage": notes} if notes else {})},
    )
    session.add(draft)
    session.flush()
    audit.record(session, None, "draft.route", "draft", draft.id, image_id=image.id, version=version)
    return draft
