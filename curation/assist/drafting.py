"""LLM-drafted captions: every image without a draft from this model and prompt version is sent
(resized, as a data URL) with the versioned caption prompt; the reply is validated with the Caption
model and stored as a draft of kind `llm`, or as a failed draft with the raw text and the reason.

Cache key: (image sha256, model, prompt version, schema version). A draft's `version` is
"<prompt>+schema<schema version>", so a rerun sends nothing for finished images, and a new prompt
or schema drafts everything again. Each result is committed on its own: an interrupted run keeps
what it had committed and a rerun continues. Database writes run on a worker thread so that they never
hold up the requests in flight, and in batches (one transaction per batch of up to 64 drafts).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import exists, select

from curation.assist.drafts import NewDraft, add_drafts
from curation.assist.evidence import refresh_evidence
from curation.assist.llm import LLMConfig, Outcome, ask_each, extract_json, image_data_url
from curation.assist.prompts import render_prompt
from curation.assist.salvage import FieldNote, salvage_caption
from curation.store import audit
from curation.store.auth import Actor, require
from curation.store.db import Workbench
from curation.store.models import Draft, DraftKind, Image
from curation.store.settings import Settings
from schema.caption import SCHEMA_VERSION, Caption, json_schema, render
from schema.errors import CaptionError, SkinflowError
from schema.fields import FIELDS, ORDINAL_VALUES
from schema.run_files import Prediction, RankedDiagnosis, write_predictions
from schema.taxonomy import Taxonomy
from schema.vocabulary import default_vocabulary

CAPTION_PROMPT = "caption-v1"
MAX_DIAGNOSES = 6
RAW_KEPT_CHARS = 20_000  # of a failed reply, for the failure list


def draft_version(prompt: str = CAPTION_PROMPT) -> str:
    return f"{prompt}+schema{SCHEMA_VERSION}"


def caption_prompt(prompt: str = CAPTION_PROMPT) -> str:
    vocab = default_vocabulary()
    return render_prompt(prompt, fields=FIELDS, vocab=vocab.terms, ordinal=ORDINAL_VALUES, k=MAX_DIAGNOSES)


def reply_schema() -> dict[str, Any]:
    """Structured-output schema of a drafting reply: the caption plus ranked diagnoses."""
    diagnosis = {
        "type": "object",
        "properties": {"diagnosis": {"type": "string"}, "confidence": {"type": "number"}},
        "required": ["diagnosis", "confidence"],
        "additionalProperties": False,
    }
    return {
        "type": "object",
        "properties": {"caption": json_schema(), "diagnoses": {"type": "array", "items": diagnosis}},
        "required": ["caption", "diagnoses"],
        "additionalProperties": False,
    }


@dataclass(frozen=True)
class DraftReply:
    """What a model's reply gives a draft: the caption, its ranked diagnoses ({"key" (None when outside the
    taxonomy), "text", "score"}) and what salvage changed or dropped."""

    caption: Caption
    diagnoses: list[dict[str, Any]]
    notes: list[FieldNote]


def parse_draft_reply(text: str, taxonomy: Taxonomy) -> DraftReply:
    """The caption, ranked diagnoses and salvage notes of a reply (curation/assist/salvage.py: every field that validates is
    kept, what can be read safely is coerced, each change noted); CaptionError when nothing usable is left."""
    try:
        data = extract_json(text)
    except ValueError as e:
        raise CaptionError(str(e)) from None
    if not isinstance(data, dict):
        raise CaptionError("the reply JSON is not an object")
    caption_data = data.get("caption") if "caption" in data else {k: v for k, v in data.items() if k != "diagnoses"}
    caption, notes = salvage_caption(caption_data)
    diagnoses: list[dict[str, Any]] = []
    seen: set[str] = set()
    entries = data.get("diagnoses")
    for entry in entries if isinstance(entries, list) else []:  # a number or an object here crashed the run
        name = entry.get("diagnosis") if isinstance(entry, dict) else entry
        if not isinstance(name, str) or not name.strip():
            continue
        key = taxonomy.normalise(name)
        identity = key or name.strip().lower()
        if identity in seen:
            continue
        seen.add(identity)
        score = entry.get("confidence") if isinstance(entry, dict) else None
        score = float(score) if isinstance(score, (int, float)) and 0 <= score <= 1 else None
        diagnoses.append({"key": key, "text": name.strip()[:200], "score": score})
        if len(diagnoses) == MAX_DIAGNOSES:
            break
    return DraftReply(caption, diagnoses, notes)


def read_reply(text: str, taxonomy: Taxonomy, max_chars: int) -> DraftReply:
    """parse_draft_reply for a reply off the wire: one over `max_chars` is refused, and any failure to read it (a
    hostile shape no rule foresaw) is a CaptionError with the reason, so it fails its image only, never the run."""
    if len(text) > max_chars:
        raise CaptionError(f"reply of {len(text):,} characters is over the {max_chars:,} limit")
    try:
        return parse_draft_reply(text, taxonomy)
    except SkinflowError:
        raise
    except Exception as e:  # noqa: BLE001 - see above
        raise CaptionError(f"the reply could not be read ({type(e).__name__}: {str(e)[:200]})") from None


@dataclass
class RunReport:
    todo: int = 0
    done: int = 0
    failed: list[tuple[int, str]] = field(default_factory=list)  # (image id, reason)
    requests: int = 0  # attempts, retries included
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0
    structured_output: bool = True

    def summary(self) -> dict[str, Any]:
        return {
            "todo": self.todo,
            "done": self.done,
            "failed": len(self.failed),
            "requests": self.requests,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "seconds": round(self.seconds, 2),
            "structured_output": self.structured_output,
        }


def images_to_draft(wb: Workbench, model: str, version: str, *, redo: bool, limit: int | None) -> list[tuple[int, str, Path]]:
    """(image id, sha256, file) of images that have no successful draft from this model and version."""
    with wb.session() as s:
        query = select(Image.id, Image.sha256, Image.file_path).where(Image.file_path.is_not(None)).order_by(Image.id)
        if not redo:
            done = exists().where(
                Draft.image_id == Image.id,
                Draft.kind == DraftKind.LLM,
                Draft.producer == model,
                Draft.version == version,
                Draft.error.is_(None),
            )
            query = query.where(~done)
        rows = s.execute(query.limit(limit) if limit else query).all()
    return [(image_id, sha, wb.images.local_path(path)) for image_id, sha, path in rows]


WRITE_BATCH = 64


async def _draft_all(
    wb: Workbench,
    actor: Actor,
    config: LLMConfig,
    todo,
    concurrency: int,
    report: RunReport,
    progress: Callable[[int, int], None] | None,
    prompt: str,
) -> None:
    system = caption_prompt(prompt)
    version = draft_version(prompt)
    results: asyncio.Queue = asyncio.Queue()
    loop = asyncio.get_running_loop()
    # own threads for image encoding and database writes: the default pool has only cpu+4 threads
    workers = ThreadPoolExecutor(max_workers=min(concurrency, 32) + 1, thread_name_prefix="drafting")

    def messages(item) -> list[dict]:
        _image_id, _sha, path = item
        url = image_data_url(path, config.max_side)
        return [
            {"role": "system", "content": system},
            {
                "role": "user",
                "content": [{"type": "text", "text": "Describe this lesion."}, {"type": "image_url", "image_url": {"url": url}}],
            },
        ]

    async def writer() -> None:
        """Commit finished drafts in batches: one transaction per batch, not per image."""
        written = 0
        while written < len(todo):
            batch = [await results.get()]
            while not results.empty() and len(batch) < WRITE_BATCH:
                batch.append(results.get_nowait())
            await loop.run_in_executor(workers, add_drafts, wb, actor, batch)
            written += len(batch)
            if progress:
                progress(written, len(todo))

    async def collect(outcome: Outcome) -> None:
        image_id, sha, _path = outcome.item
        meta: dict[str, Any] = {"sha256": sha, "prompt": prompt, "schema_version": SCHEMA_VERSION}
        draft = NewDraft(image_id, DraftKind.LLM, config.model, version, meta=meta)
        reply = outcome.reply
        report.requests += reply.attempts if reply is not None else 1
        if reply is None:
            report.failed.append((image_id, outcome.error))
            draft.error = outcome.error
        else:
            report.prompt_tokens += reply.prompt_tokens
            report.completion_tokens += reply.completion_tokens
            meta.update(
                prompt_tokens=reply.prompt_tokens,
                completion_tokens=reply.completion_tokens,
                attempts=reply.attempts,
                structured_output=reply.structured,
            )
            draft.raw_reply = reply.text[:RAW_KEPT_CHARS]
            try:
                read = read_reply(reply.text, wb.taxonomy, config.max_reply_chars)
            except SkinflowError as e:
                report.failed.append((image_id, str(e)))
                draft.error = str(e)
            else:
                draft.caption, draft.diagnoses = read.caption, read.diagnoses
                if read.notes:  # what salvage changed or dropped, shown beside each field on the Annotate page
                    meta["salvage"] = [n.to_json() for n in read.notes]
                report.done += 1
        results.put_nowait(draft)

    try:
        _, report.structured_output = await asyncio.gather(
            writer(),
            ask_each(
                config,
                todo,
                messages,
                collect,
                concurrency=concurrency,
                json_schema=reply_schema(),
                schema_name="lesion_draft",
                executor=workers,
            ),
        )
    finally:
        workers.shutdown(wait=True)


def draft_images(
    wb: Workbench,
    actor: Actor,
    *,
    model: str | None = None,
    limit: int | None = None,
    concurrency: int | None = None,
    redo: bool = False,
    progress: Callable[[int, int], None] | None = None,
    prompt: str = CAPTION_PROMPT,
    environ: dict[str, str] | None = None,
) -> RunReport:
    """Draft captions for every image that has none from this model and prompt version."""
    require(actor, "admin", "run LLM drafting")
    config = LLMConfig.from_settings(wb.settings, model, environ)
    concurrency = max(1, min(concurrency or config.concurrency, 256))
    caption_prompt(prompt)  # an unknown prompt fails before anything is sent
    todo = images_to_draft(wb, config.model, draft_version(prompt), redo=redo, limit=limit)
    report = RunReport(todo=len(todo))
    start = time.perf_counter()
    if todo:
        asyncio.run(_draft_all(wb, actor, config, todo, concurrency, report, progress, prompt))
    report.seconds = time.perf_counter() - start
    with wb.session() as s:
        audit.record(s, actor, "draft.run", "draft", None, model=config.model, prompt=prompt, **report.summary())
    if report.done:
        refresh_evidence(wb)  # a new or grown source: the Annotate page routes fields with the evidence as of now
    return report


def recent_failures(wb: Workbench, actor: Actor, limit: int = 100) -> list[dict[str, Any]]:
    """Failed LLM drafts, newest first, for the drafting page."""
    require(actor, "admin", "see drafting failures")
    with wb.session() as s:
        rows = s.execute(
            select(Draft.image_id, Draft.producer, Draft.version, Draft.error, Draft.created_at)
            .where(Draft.kind == DraftKind.LLM, Draft.error.is_not(None))
            .order_by(Draft.id.desc())
            .limit(limit)
        ).all()
    return [
        {"image": r.image_id, "model": r.producer, "prompt": r.version, "reason": r.error, "when": r.created_at} for r in rows
    ]


def predict_with_llm(
    settings: Settings,
    taxonomy: Taxonomy,
    items: list[dict[str, Any]],
    *,
    model: str | None = None,
    concurrency: int | None = None,
    prompt: str = CAPTION_PROMPT,
    environ: dict[str, str] | None = None,
) -> list[Prediction]:
    """Baseline predictions from any OpenAI-compatible model, with the drafting prompt, in the format of
    `skinflow predict` (so `skinflow eval` scores an LLM like a trained checkpoint). items: {"id", "path"}.
    Diagnoses the model names outside the taxonomy are dropped; listed ones without a confidence get none (0)."""
    config = LLMConfig.from_settings(settings, model, environ)
    system = caption_prompt(prompt)
    version = f"llm:{config.model}:{draft_version(prompt)}"
    rows: dict[int, Prediction] = {}

    def messages(item) -> list[dict]:
        url = image_data_url(Path(item["path"]), config.max_side)
        return [
            {"role": "system", "content": system},
            {
                "role": "user",
                "content": [{"type": "text", "text": "Describe this lesion."}, {"type": "image_url", "image_url": {"url": url}}],
            },
        ]

    async def collect(outcome: Outcome) -> None:
        item = outcome.item
        row = Prediction(image=str(item["path"]), model_version=version, id=item["id"], caption_error=outcome.error)
        if outcome.reply is not None:
            row.answer = outcome.reply.text[:RAW_KEPT_CHARS]
            try:
                read = read_reply(outcome.reply.text, taxonomy, config.max_reply_chars)
            except SkinflowError as e:
                row.caption_error = str(e)
            else:
                row.caption, row.caption_text, row.caption_error = read.caption.to_json(), render(read.caption), None
                row.diagnoses = [
                    RankedDiagnosis(key=d["key"], score=d["score"] or 0.0, display=taxonomy.label(d["key"]).display)
                    for d in read.diagnoses
                    if d["key"]
                ]
        rows[item["id"]] = row

    async def run() -> None:
        await ask_each(
            config,
            items,
            messages,
            collect,
            concurrency=max(1, concurrency or config.concurrency),
            json_schema=reply_schema(),
            schema_name="lesion_draft",
        )

    asyncio.run(run())
    return [rows[item["id"]] for item in items]


def write_llm_predictions(
    settings: Settings, taxonomy: Taxonomy, items: list[dict[str, Any]], out_file: Path, *, model: str | None = None
) -> Path:
    """predict_with_llm, written as a prediction file (`skinflow eval --llm`); returns its path."""
    write_predictions(out_file, predict_with_llm(settings, taxonomy, items, model=model))
    return out_file
