"""The files a training run and the workbench pass each other, each typed once here with its read and write, so
the side that writes a field and the side that reads it cannot drift apart:

- a prediction file (predictions.jsonl, held_out_predictions.jsonl, an LLM's `eval --llm` file): one Prediction
  per image, written by the trainer's predictors and by LLM drafting, read by the evaluation, the suggestions
  import and the held-out evidence;
- progress.json: a run's (or an ablation's) state, rewritten as it goes by the trainer (RunProgress), polled by
  the runs registry and the Train page.

A prediction file can come from anywhere (`skinflow suggest --predictions FILE`), so reading one is defensive:
a row is a Prediction or a ValueError saying why it is not, and scores that are not probabilities read as 0.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from schema.files import loads_bounded, row_id, write_atomic, write_json_atomic

PROGRESS_FILE = "progress.json"
HELD_OUT_FILE = "held_out_predictions.jsonl"  # a finished run's predictions on its export's val and test images
MAX_MODEL_VERSION_CHARS = 200


def probability(value: Any) -> float:
    """A score from a prediction file; anything that is not a probability (text, inf, a 400-digit number, a bool) is 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return 0.0
    try:
        number = float(value)
    except OverflowError:
        return 0.0
    return number if 0.0 <= number <= 1.0 else 0.0


@dataclass(frozen=True)
class RankedDiagnosis:
    """One entry of a prediction's ranked differential: a taxonomy key (None when the model named something else)."""

    key: str | None
    score: float = 0.0
    display: str = ""


@dataclass
class Prediction:
    """What a model said about one image: its caption (as the 11-field JSON, or None with the reason) and its ranked
    diagnoses, best first."""

    image: str  # the picture's path (its file name is the sha256 for images of a workbench)
    model_version: str
    id: int | None = None  # the image id (or the export record id) when the manifest gave one
    caption: dict[str, Any] | None = None
    caption_text: str = ""  # the caption as the model wrote it (rendered, for a probe)
    caption_error: str | None = None
    diagnoses: list[RankedDiagnosis] = field(default_factory=list)
    answer: str = ""  # the model's free-text diagnosis answer

    @property
    def top(self) -> RankedDiagnosis | None:
        return self.diagnoses[0] if self.diagnoses else None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, row: Any) -> Prediction:
        """A prediction file's row, or ValueError saying why it cannot be one (the row is skipped, not the file)."""
        if not isinstance(row, dict):
            raise ValueError("not a JSON object")
        version = row.get("model_version")
        if not isinstance(version, str) or not version.strip() or len(version) > MAX_MODEL_VERSION_CHARS:
            raise ValueError("model_version is not a short text")
        image_id = row_id(row.get("id"))
        if row.get("id") is not None and image_id is None:
            raise ValueError("id is not an image number")
        image = row.get("image", "")
        if not isinstance(image, str):
            raise ValueError("image is not a file name")
        caption, caption_error = row.get("caption"), _text(row.get("caption_error"), 2000) or None
        if caption is not None and not isinstance(caption, dict):
            caption, caption_error = None, f"a caption must be an object with the 11 fields, got {type(caption).__name__}"
        entries = row.get("diagnoses")
        return cls(
            image=image,
            model_version=version,
            id=image_id,
            caption=caption,
            caption_text=_text(row.get("caption_text")),
            caption_error=caption_error,
            diagnoses=[
                RankedDiagnosis(
                    key=entry.get("key") if isinstance(entry.get("key"), str) else None,
                    score=probability(entry.get("score")),
                    display=_text(entry.get("display"), 200),
                )
                for entry in (entries if isinstance(entries, list) else [])
                if isinstance(entry, dict)
            ],
            answer=_text(row.get("answer")),
        )


def _text(value: Any, limit: int = 20_000) -> str:
    return value[:limit] if isinstance(value, str) else ""


def write_predictions(path: Path, predictions: Iterable[Prediction]) -> int:
    """One JSON line per prediction, written atomically (a reader never sees half a file); returns how many."""
    lines = [json.dumps(p.to_json(), sort_keys=True, ensure_ascii=False) + "\n" for p in predictions]
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    write_atomic(Path(path), "".join(lines))
    return len(lines)


@dataclass
class RunProgress:
    """A run's progress.json. A training run reports its stage and step; an ablation how many of its runs are done."""

    status: str  # running, stage done, done, cancelled
    pid: int | None = None
    updated: float | None = None  # time.time() of the last write
    # a training run
    stage: int | str | None = None  # 0, 1, 2 (SFT, GRPO I, GRPO II) or "probe"
    stage_name: str | None = None
    stages: list[int | str] = field(default_factory=list)
    stage_index: int = 0
    step: int = 0
    max_steps: int = 0
    model: str | None = None  # the final model folder, once done
    # an ablation
    done: int = 0
    total: int = 0
    current: str | None = None

    def fraction(self, ablation: bool = False) -> float:
        """How far the run is, 0..1."""
        if ablation:
            return min(1.0, self.done / max(self.total, 1))
        stages = len(self.stages) or 3
        return min(1.0, (self.stage_index + self.step / max(self.max_steps, 1)) / stages)

    def describe(self, ablation: bool = False) -> str:
        """One line for a progress bar."""
        if ablation:
            return f"ablation: {self.done} of {max(self.total, 1)} runs done; now {self.current or 'starting'}"
        return f"{self.stage_name or 'starting'}: step {self.step} of {max(self.max_steps, 1)}"

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}

    @classmethod
    def from_json(cls, doc: Any) -> RunProgress | None:
        """None for anything that is not a progress record (a file being replaced, another program's JSON)."""
        if not isinstance(doc, dict) or not isinstance(doc.get("status"), str):
            return None
        known = {k: doc[k] for k in cls.__dataclass_fields__ if k in doc}
        try:
            progress = cls(**known)
        except TypeError:
            return None
        numbers = (progress.stage_index, progress.step, progress.max_steps, progress.done, progress.total)
        if not all(isinstance(n, int) and not isinstance(n, bool) for n in numbers) or not isinstance(progress.stages, list):
            return None
        if not all(isinstance(v, (str, type(None))) for v in (progress.stage_name, progress.model, progress.current)):
            return None
        if progress.pid is not None and not isinstance(progress.pid, int):
            progress.pid = None
        if progress.updated is not None and not (isinstance(progress.updated, (int, float)) and math.isfinite(progress.updated)):
            progress.updated = None
        return progress


def write_progress(run_dir: Path, progress: RunProgress) -> None:
    write_json_atomic(Path(run_dir) / PROGRESS_FILE, progress.to_json())


def read_progress(run_dir: Path) -> RunProgress | None:
    """The run folder's progress, or None when it has none yet (or is being rewritten this instant)."""
    try:
        return RunProgress.from_json(loads_bounded((Path(run_dir) / PROGRESS_FILE).read_text(encoding="utf-8")))
    except (OSError, ValueError):
        return None


def write_image_manifest(path: Path, items: Iterable[dict[str, Any]]) -> None:
    """The images to predict, one {"id", "image"} line each (items carry "id" and "path"): what `skinflow predict`
    and the trainer's predictors read."""
    write_atomic(Path(path), "".join(json.dumps({"id": item["id"], "image": str(item["path"])}) + "\n" for item in items))
