"""Reasoning-frequency attribute weights (SkinFlow: an attribute's weight is how often diagnostic
reasonings mention it).

Reasonings come from two sources: the LLM (`collect_reasonings`, for verified records: "explain how
the image leads to the confirmed diagnosis") and annotators' rationales (the newest version of each
annotation that has one). A reasoning mentions a field when its normalised text contains, as a
whole word or phrase, one of the field's names, vocabulary terms or synonyms (for size also a
measurement such as "7 mm"), plurals included; the lexicon is `FIELD_LEXICON`. A term that belongs to two fields
(e.g. "linear": shape and distribution) counts for both. The bare word "other" is not a mention of
the `other` field (it is too common); "other descriptors" is.

weight_i = share of reasonings mentioning field i, normalised to sum 1, then every weight is raised
to at least `floor` (default 0.01) by taking the difference proportionally from the others, so no
field drops out. No mentions at all gives equal weights. Same reasonings, same weights, exactly.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import exists, select, update

from curation.assist.llm import LLMConfig, Outcome, ask_each, image_data_url
from curation.assist.prompts import render_prompt
from curation.errors import NotFound
from curation.store import audit
from curation.store.auth import Actor, require
from curation.store.db import Workbench
from curation.store.models import Annotation, Image, Reasoning, WeightSet
from schema.errors import SkinflowError
from schema.fields import FIELD_KEYS, FIELDS
from schema.vocabulary import clean_text, default_vocabulary

REASONING_PROMPT = "reasoning-v1"
DEFAULT_FLOOR = 0.01
SOURCES = ("llm", "annotator", "all")
MAX_REASONING_CHARS = 20_000
_GENERIC_NAMES = {"other"}
_MEASUREMENT = r"\d+(?:[.,]\d+)?\s?(?:mm|cm|millimet(?:er|re)s?|centimet(?:er|re)s?)"


def _normalise(text: str) -> str:
    return clean_text(text).lower().replace("‐", "-")


def _lexicon() -> dict[str, list[str]]:
    vocab = default_vocabulary()
    lexicon: dict[str, list[str]] = {}
    for f in FIELDS:
        names = {f.key.replace("_", " "), f.label.lower(), *(a.lower() for a in f.aliases)} - _GENERIC_NAMES
        if f.key == "border_surface":
            names |= {"border", "borders", "surface", "margin", "margins", "edge", "edges"}
        terms: set[str] = set()
        if f.kind != "free":
            for term, synonyms in vocab.synonyms[f.key].items():
                terms |= {term.lower(), *(s.lower() for s in synonyms)}
        lexicon[f.key] = sorted({_normalise(p) for p in names | terms if p}, key=lambda p: (-len(p), p))
    return lexicon


FIELD_LEXICON: dict[str, list[str]] = _lexicon()
_PATTERNS = {
    # plurals count too: "papules", "plaques", "borders"
    key: re.compile(
        r"(?<![\w])(?:"
        + "|".join(re.escape(p) for p in phrases)
        + (f"|{_MEASUREMENT}" if key == "size" else "")
        + r")(?:e?s)?(?![\w])"
    )
    for key, phrases in FIELD_LEXICON.items()
}


def field_mentions(text: str) -> list[str]:
    """The fields a reasoning mentions, in schema order."""
    normalised = _normalise(text)
    return [key for key in FIELD_KEYS if _PATTERNS[key].search(normalised)]


def compute_weights(texts: list[str], floor: float = DEFAULT_FLOOR) -> tuple[dict[str, float], dict[str, int]]:
    """(weights summing to 1 with each >= floor, raw mention counts) for a list of reasonings."""
    if not 0 <= floor * len(FIELD_KEYS) <= 1:
        raise SkinflowError(f"floor must be between 0 and {1 / len(FIELD_KEYS):.4f} (so the weights can sum to 1)")
    counts = {key: 0 for key in FIELD_KEYS}
    for text in texts:
        for key in field_mentions(text):
            counts[key] += 1
    total = sum(counts.values())
    if total == 0:
        return {key: 1 / len(FIELD_KEYS) for key in FIELD_KEYS}, counts
    share = {key: counts[key] / total for key in FIELD_KEYS}
    floored: set[str] = set()
    while True:  # raise the smallest to the floor, rescale the rest; repeat until nothing new falls below
        free = [k for k in FIELD_KEYS if k not in floored]
        budget = 1.0 - floor * len(floored)
        mass = sum(share[k] for k in free)
        weights = {k: (floor if k in floored else share[k] * budget / mass) for k in FIELD_KEYS}
        below = {k for k in free if weights[k] < floor}
        if not below:
            return weights, counts
        floored |= below


def sentences_mentioning(text: str, key: str) -> list[str]:
    return [s.strip() for s in re.split(r"(?<=[.!?])\s+", clean_text(text)) if s.strip() and _PATTERNS[key].search(_normalise(s))]


# -- gathering reasonings ----------------------------------------------------------------------------
@dataclass(frozen=True)
class ReasoningText:
    source: str  # llm | annotator
    producer: str
    prompt_version: str | None
    text: str


# Below this many reasonings a field's mention frequency is mostly chance: the Weights page asks before computing
# (a set built from 2 rationales became the active one and went into every export).
FEW_REASONINGS = 30


def gather_reasonings(wb: Workbench, source: str = "all") -> list[ReasoningText]:
    """LLM reasonings and annotator rationales (newest annotation versions only), in a fixed order."""
    if source not in SOURCES:
        raise SkinflowError(f"source must be one of {', '.join(SOURCES)}")
    out: list[ReasoningText] = []
    with wb.session() as s:
        if source in ("llm", "all"):
            for r in s.scalars(select(Reasoning).where(Reasoning.source == "llm").order_by(Reasoning.id)):
                out.append(ReasoningText("llm", r.producer, r.prompt_version, r.text))
        if source in ("annotator", "all"):
            superseded = select(Annotation.supersedes_id).where(Annotation.supersedes_id.is_not(None))
            rows = s.scalars(
                select(Annotation)
                .where(Annotation.rationale.is_not(None), Annotation.id.not_in(superseded))
                .order_by(Annotation.id)
            )
            for a in rows:
                out.append(ReasoningText("annotator", a.user.username, None, a.rationale))
    return out


@dataclass
class WeightSetInfo:
    id: int
    name: str
    weights: dict[str, float]
    counts: dict[str, int]
    n_reasonings: int
    floor: float
    params: dict[str, Any]
    active: bool
    created_at: Any = None
    created_by: str | None = None


def _info(ws: WeightSet) -> WeightSetInfo:
    return WeightSetInfo(
        ws.id,
        ws.name,
        ws.weights,
        ws.counts,
        ws.n_reasonings,
        ws.floor,
        ws.params,
        ws.active,
        ws.created_at,
        ws.params.get("created_by"),
    )


def create_weight_set(
    wb: Workbench, actor: Actor, *, source: str = "all", floor: float = DEFAULT_FLOOR, activate: bool | None = None
) -> WeightSetInfo:
    """Compute and store a new weight set. The first one becomes active; later ones when asked."""
    require(actor, "admin", "compute attribute weights")
    reasonings = gather_reasonings(wb, source)
    if not reasonings:
        raise SkinflowError(
            f"no reasonings from source {source!r} yet: run `skinflow reasonings` or add rationales when annotating"
        )
    weights, counts = compute_weights([r.text for r in reasonings], floor)
    params = {
        "source": source,
        "created_by": actor.username,
        "sources": dict(sorted({r.source: sum(1 for x in reasonings if x.source == r.source) for r in reasonings}.items())),
        "producers": sorted({f"{r.source}:{r.producer}" for r in reasonings}),
        "prompt_versions": sorted({r.prompt_version for r in reasonings if r.prompt_version}),
        "lexicon": "curation.assist.weights.FIELD_LEXICON (names, vocabulary terms and synonyms; whole words)",
    }
    with wb.session() as s:
        number = (s.scalar(select(WeightSet.id).order_by(WeightSet.id.desc()).limit(1)) or 0) + 1
        any_active = s.scalar(select(WeightSet.id).where(WeightSet.active).limit(1)) is not None
        make_active = (not any_active) if activate is None else activate
        if make_active:
            s.execute(update(WeightSet).values(active=False))
        ws = WeightSet(
            name=f"weights-v{number}",
            weights=weights,
            method="reasoning-frequency",
            n_reasonings=len(reasonings),
            counts=counts,
            floor=floor,
            params=params,
            active=make_active,
            created_by=actor.id,
        )
        s.add(ws)
        s.flush()
        audit.record(s, actor, "weights.create", "weight_set", ws.id, name=ws.name, active=make_active, n=len(reasonings))
        return _info(ws)


def activate_weight_set(wb: Workbench, actor: Actor, weight_set_id: int) -> None:
    require(actor, "admin", "activate a weight set")
    with wb.session() as s:
        ws = s.get(WeightSet, weight_set_id)
        if ws is None:
            raise NotFound(f"no weight set #{weight_set_id}")
        s.execute(update(WeightSet).values(active=False))
        ws.active = True
        audit.record(s, actor, "weights.activate", "weight_set", ws.id, name=ws.name)


def list_weight_sets(wb: Workbench) -> list[WeightSetInfo]:
    with wb.session() as s:
        return [_info(ws) for ws in s.scalars(select(WeightSet).order_by(WeightSet.id.desc()))]


def evidence(wb: Workbench, key: str, source: str = "all", k: int = 3) -> list[str]:
    """A few sentences that mention the field, as evidence on the weights page."""
    found: list[str] = []
    for reasoning in gather_reasonings(wb, source):
        found += sentences_mentioning(reasoning.text, key)[: k - len(found)]
        if len(found) >= k:
            break
    return found


# -- LLM reasonings ----------------------------------------------------------------------------------
def reasoning_targets(wb: Workbench, model: str, prompt: str, limit: int | None) -> list[tuple[int, int, str, Any]]:
    """(image id, verified annotation id, diagnosis to explain, file) of verified images without a
    reasoning from this model and prompt."""
    taxonomy = wb.taxonomy
    with wb.session() as s:
        done = exists().where(
            Reasoning.image_id == Image.id,
            Reasoning.source == "llm",
            Reasoning.producer == model,
            Reasoning.prompt_version == prompt,
        )
        query = (
            select(Image.id, Image.verified_annotation_id, Image.file_path, Annotation.diagnosis_key, Annotation.diagnosis_text)
            .join(Annotation, Annotation.id == Image.verified_annotation_id)
            .where(Image.status == "verified", Image.file_path.is_not(None), ~done)
            .order_by(Image.id)
        )
        rows = s.execute(query.limit(limit) if limit else query).all()
    out = []
    for image_id, annotation_id, path, key, text in rows:
        name = taxonomy.labels[key].display if key in taxonomy.labels else text
        if name:
            out.append((image_id, annotation_id, name, wb.images.local_path(path)))
    return out


def add_reasoning(
    wb: Workbench,
    actor: Actor,
    image_id: int,
    *,
    text: str,
    producer: str,
    prompt_version: str,
    annotation_id: int | None = None,
    meta: dict | None = None,
) -> int:
    require(actor, "admin", "store reasonings")
    text = clean_text(text)[:MAX_REASONING_CHARS]
    with wb.session() as s:
        row = Reasoning(
            image_id=image_id,
            annotation_id=annotation_id,
            source="llm",
            producer=producer,
            prompt_version=prompt_version,
            text=text,
            fields_mentioned=field_mentions(text),
            meta=dict(meta or {}),
        )
        s.add(row)
        s.flush()
        audit.record(s, actor, "reasoning.add", "image", image_id, reasoning_id=row.id, producer=producer)
        return row.id


@dataclass
class ReasoningReport:
    todo: int = 0
    done: int = 0
    failed: list[tuple[int, str]] = field(default_factory=list)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0


def collect_reasonings(
    wb: Workbench,
    actor: Actor,
    *,
    model: str | None = None,
    limit: int | None = None,
    concurrency: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    prompt: str = REASONING_PROMPT,
    environ: dict[str, str] | None = None,
) -> ReasoningReport:
    """Ask the LLM, for each verified record, for the reasoning from the image to its confirmed diagnosis."""
    require(actor, "admin", "collect reasonings")
    config = LLMConfig.from_settings(wb.settings, model, environ)
    render_prompt(prompt, diagnosis="x")  # an unknown prompt fails before anything is sent
    todo = reasoning_targets(wb, config.model, prompt, limit)
    report = ReasoningReport(todo=len(todo))
    start = time.perf_counter()

    def messages(item) -> list[dict]:
        _image_id, _annotation_id, diagnosis, path = item
        return [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": render_prompt(prompt, diagnosis=diagnosis)},
                    {"type": "image_url", "image_url": {"url": image_data_url(path, config.max_side)}},
                ],
            }
        ]

    finished = 0

    async def collect(outcome: Outcome) -> None:
        nonlocal finished
        image_id, annotation_id, _diagnosis, _path = outcome.item
        reply = outcome.reply
        if reply is None:
            report.failed.append((image_id, outcome.error))
        elif not reply.text.strip() or len(reply.text) > config.max_reply_chars:
            report.failed.append((image_id, "empty reply" if not reply.text.strip() else "reply over the length limit"))
        else:
            await asyncio.to_thread(
                add_reasoning,
                wb,
                actor,
                image_id,
                text=reply.text,
                producer=config.model,
                prompt_version=prompt,
                annotation_id=annotation_id,
                meta={"prompt_tokens": reply.prompt_tokens, "completion_tokens": reply.completion_tokens},
            )
            report.done += 1
            report.prompt_tokens += reply.prompt_tokens
            report.completion_tokens += reply.completion_tokens
        finished += 1
        if progress:
            progress(finished, len(todo))

    async def run() -> None:
        await ask_each(config, todo, messages, collect, concurrency=concurrency or config.concurrency)

    if todo:
        asyncio.run(run())
    report.seconds = time.perf_counter() - start
    return report
