"""Model suggestions back into labelling: a prediction file (`skinflow predict`) becomes model drafts.

Each line names its image by `id` (the workbench image id, as in exports) and/or by an image path whose
file name is the stored sha256 (export layout). When both are there they must agree, so a prediction
file made from another workbench's export cannot attach suggestions to the wrong pictures. A draft is
kind "model", producer "skinflow", version = the prediction's model_version; importing the same file
twice adds nothing (one suggestion per image and model version).
"""

from __future__ import annotations

import json
import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select

from curation.assist.drafts import NewDraft, add_drafts
from curation.assist.evidence import refresh_evidence
from curation.assist.salvage import salvage_caption
from curation.store.auth import Actor, require
from curation.store.db import Workbench
from curation.store.models import NEEDS_WORK_STATUSES, Draft, DraftKind, Image, QueueScore, utcnow
from schema.caption import validate_caption
from schema.compare import caption_scores
from schema.errors import CaptionError, SkinflowError
from schema.files import TEMP_PREFIX, iter_jsonl, row_id, temp_owner_tag
from schema.run_files import Prediction

PRODUCER = "skinflow"
_SHA = re.compile(r"^[0-9a-f]{64}$")


@dataclass
class SuggestionReport:
    added: int = 0
    already_there: int = 0
    skipped: list[tuple[int, str]] = field(default_factory=list)  # (line, why)


def _diagnoses(prediction: Prediction, taxonomy) -> list[dict[str, Any]]:
    """The ranked diagnoses a draft keeps: those the taxonomy knows."""
    return [{"key": d.key, "score": d.score} for d in prediction.diagnoses if d.key in taxonomy.labels]


def import_predictions(wb: Workbench, actor: Actor, path: str | Path) -> SuggestionReport:
    require(actor, "admin", "import model suggestions")
    path = Path(path)
    try:
        rows = list(
            iter_jsonl(
                path,
                check=lambda row: bool(row.get("model_version")),
                problem="has no model_version; is this a `skinflow predict` file?",
            )
        )
    except SkinflowError as e:
        raise SkinflowError(f"{e}; nothing was imported") from None
    report = SuggestionReport()
    with wb.session() as s:
        ids = [i for _, r in rows if (i := row_id(r.get("id"))) is not None]
        shas = [Path(str(r.get("image", ""))).stem for _, r in rows]
        by_id = {i.id: i.sha256 for i in s.execute(select(Image.id, Image.sha256).where(Image.id.in_(ids)))}
        by_sha = {
            sha: i
            for i, sha in s.execute(select(Image.id, Image.sha256).where(Image.sha256.in_([x for x in shas if _SHA.match(x)])))
        }
        present = set(
            s.execute(
                select(Draft.image_id, Draft.version).where(Draft.kind == DraftKind.MODEL, Draft.producer == PRODUCER)
            ).all()
        )
    drafts = []
    for number, row in rows:
        try:
            prediction = Prediction.from_json(row)
        except ValueError as e:  # one hostile line is skipped with its reason; the rest import
            report.skipped.append((number, str(e)))
            continue
        version = prediction.model_version
        sha = Path(prediction.image).stem
        image_id = prediction.id or by_sha.get(sha)
        if image_id is None or image_id not in by_id and image_id not in by_sha.values():
            report.skipped.append((number, "no such image in this workbench"))
            continue
        if _SHA.match(sha) and by_id.get(image_id, sha) != sha:
            report.skipped.append(
                (number, f"id {image_id} names a different picture than {sha[:12]}...: prediction file from another workbench?")
            )
            continue
        if (image_id, version) in present:
            report.already_there += 1
            continue
        caption, error, notes = prediction.caption, prediction.caption_error, []
        if caption is not None:
            try:
                salvaged, notes = salvage_caption(caption)
                caption = salvaged.to_json()
            except CaptionError as e:
                caption, error = None, str(e)
            except Exception as e:  # noqa: BLE001 - a shape no rule foresaw: this row's caption fails, not the file
                caption, error = None, f"the caption could not be read ({type(e).__name__})"
        drafts.append(
            NewDraft(
                image_id=image_id,
                kind=DraftKind.MODEL,
                producer=PRODUCER,
                version=version,
                caption=caption,
                error=error if caption is None else None,
                raw_reply=prediction.caption_text or None,
                diagnoses=_diagnoses(prediction, wb.taxonomy),
                meta={
                    "answer": prediction.answer or None,
                    "source": str(path),
                    **({"salvage": [n.to_json() for n in notes]} if notes else {}),
                },
            )
        )
        present.add((image_id, version))
    if drafts:
        add_drafts(wb, actor, drafts)
        _score_for_queue(wb, drafts)
        refresh_evidence(wb)  # a new source: the Annotate page routes fields with the evidence as of now
    report.added = len(drafts)
    return report


def _score_for_queue(wb: Workbench, drafts: list[NewDraft]) -> None:
    """queue_scores for the uncertainty and disagreement strategies, from the newest suggestions."""
    image_ids = [d.image_id for d in drafts]
    with wb.session() as s:
        llm = {}
        for image_id, caption in s.execute(
            select(Draft.image_id, Draft.caption)
            .where(
                Draft.image_id.in_(image_ids),
                Draft.kind.in_((DraftKind.LLM, DraftKind.SYNTHETIC)),
                Draft.error.is_(None),
                Draft.caption.is_not(None),
            )
            .order_by(Draft.id)
        ):
            llm[image_id] = caption  # the newest wins
        for d in drafts:
            top = max((entry["score"] for entry in d.diagnoses), default=None)
            disagreement = None
            if d.caption is not None and d.image_id in llm:
                scores = caption_scores(validate_caption(llm[d.image_id]), validate_caption(d.caption))
                disagreement = 1.0 - sum(scores.values()) / len(scores)
            s.merge(
                QueueScore(
                    image_id=d.image_id,
                    uncertainty=None if top is None else 1.0 - top,
                    disagreement=disagreement,
                    updated_at=utcnow(),
                )
            )


def images_needing_work(wb: Workbench, limit: int | None = None) -> list[dict[str, Any]]:
    """{"id", "image"} for every image still in the labelling queue (pending or annotated, with a picture):
    the manifest `skinflow predict` reads when suggestions are refreshed."""
    with wb.session() as s:
        query = (
            select(Image.id, Image.file_path)
            .where(Image.status.in_(NEEDS_WORK_STATUSES), Image.file_path.is_not(None))
            .order_by(Image.id)
        )
        rows = s.execute(query.limit(limit) if limit else query).all()
    return [{"id": image_id, "image": str(wb.images.local_path(file_path))} for image_id, file_path in rows]


@dataclass(frozen=True, kw_only=True)
class ModelSuggestions:
    predicted: int  # images the model predicted
    report: SuggestionReport


def suggest_with_model(
    wb: Workbench, actor: Actor, predict: Callable[[Path, Path], int], *, limit: int | None = None
) -> ModelSuggestions | None:
    """Suggestions for every image that still needs work: `predict(manifest, out_file)` (the trainer's
    predict_to_file with a checkpoint bound; curation does not import the trainer) writes a prediction file
    for the manifest, which is then imported. None when no image needs work. The working folder is
    removed afterwards; it is named like every temp file (host and pid), so a killed run's folder can be told
    from a live one's."""
    require(actor, "admin", "import model suggestions")
    items = images_needing_work(wb, limit)
    if not items:
        return None
    with tempfile.TemporaryDirectory(prefix=f"{TEMP_PREFIX}{temp_owner_tag()}suggest", dir=wb.settings.home) as folder:
        manifest, predictions = Path(folder) / "images.jsonl", Path(folder) / "predictions.jsonl"
        manifest.write_text("".join(json.dumps(item) + "\n" for item in items), encoding="utf-8")
        predicted = predict(manifest, predictions)
        return ModelSuggestions(predicted=predicted, report=import_predictions(wb, actor, predictions))
