"""`skinflow predict`: captions and ranked diagnoses for a list of images, as JSONL curation imports as
model suggestions.

Per image: the caption is generated greedily from the caption instruction and parsed with the schema;
the diagnoses are ranked by sequence probability: every taxonomy label's name is scored as the answer to
the diagnosis instruction (sum of token log-probabilities, end-of-turn included), normalised over the
labels with a softmax, and the top K are kept with their scores. So the scores are a distribution over the
taxonomy (what calibration and label-issue detection need), and ranking never depends on free-text
matching. The model's own free-text answer is kept as `answer`.

Output line: {"image", "id", "model_version", "caption" (dict or null), "caption_text", "caption_error",
"diagnoses": [{"key", "display", "score"}, ...], "answer"}.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from schema.caption import parse
from schema.errors import CaptionError
from schema.files import iter_jsonl
from schema.run_files import HELD_OUT_FILE, PROGRESS_FILE, Prediction, RankedDiagnosis, write_image_manifest, write_predictions
from schema.taxonomy import Taxonomy, load_taxonomy
from trainer.errors import TrainerError
from trainer.model import load

CAPTION_INSTRUCTION_FILE = "instructions.json"


def read_manifest(path: str | Path) -> list[dict[str, Any]]:
    """Images to predict: a JSONL file of {"image": path, "id": optional} (grpo/stage1.jsonl works as is),
    or a text file with one path per line. Relative paths are relative to the manifest's folder (for a
    grpo/*.jsonl file, to the export folder)."""
    path = Path(path)
    if not path.is_file():
        raise TrainerError(f'image manifest {path} does not exist; give a JSONL of {{"image": path}} rows or a list of paths')
    base = path.parent.parent if path.parent.name == "grpo" else path.parent
    lines = [
        (number, line.strip()) for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1) if line.strip()
    ]
    if lines and lines[0][1].startswith("{"):
        rows = iter_jsonl(path, check=lambda row: "image" in row, problem="has no 'image'", error=TrainerError)
        listed = [(number, {"image": row["image"], "id": row.get("id")}) for number, row in rows]
    else:
        listed = [(number, {"image": line, "id": None}) for number, line in lines]
    items = []
    for number, item in listed:
        full = Path(item["image"]) if Path(item["image"]).is_absolute() else base / item["image"]
        if not full.is_file():
            raise TrainerError(f"{path} line {number}: image {full} does not exist")
        items.append({**item, "path": full})
    if not items:
        raise TrainerError(f"image manifest {path} lists no images")
    return items


def _batches(items: list, size: int) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class Predictor:
    """A loaded checkpoint with the instructions and taxonomy it was trained with."""

    def __init__(
        self,
        checkpoint: str | Path,
        *,
        taxonomy: Taxonomy | None = None,
        instructions: dict[str, str] | None = None,
        device: str | None = None,
        max_new_tokens: int = 96,
    ):
        checkpoint = Path(checkpoint)
        if checkpoint.is_dir() and (checkpoint / "model").exists():
            checkpoint = (checkpoint / "model").resolve()  # a run folder: its final model
        if not (checkpoint / "config.json").is_file():
            raise TrainerError(
                f"{checkpoint} is not a checkpoint folder (no config.json); pass runs/<id> or runs/<id>/stage2/final"
            )
        run_config = self._run_config(checkpoint)
        export = Path(run_config["export"]) if run_config.get("export") else None
        if taxonomy is None:
            if export is None or not (export / "grpo" / "taxonomy.json").is_file():
                raise TrainerError("the checkpoint's export (and its taxonomy) cannot be found; pass the taxonomy explicitly")
            taxonomy = load_taxonomy(export / "grpo" / "taxonomy.json")
        if instructions is None:
            instructions = json.loads((export / "grpo" / CAPTION_INSTRUCTION_FILE).read_text(encoding="utf-8"))
        self.checkpoint, self.taxonomy, self.instructions = checkpoint, taxonomy, instructions
        self.model_version = f"{run_config.get('run_id') or checkpoint.parent.name}:{checkpoint.parent.name}"
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model, self.processor = load(checkpoint)
        self.model.to(self.device).eval()
        self.max_new_tokens = max_new_tokens
        self.processor.tokenizer.padding_side = "left"
        self.keys = sorted(taxonomy.labels)

    @staticmethod
    def _run_config(checkpoint: Path) -> dict[str, Any]:
        for folder in (checkpoint, *checkpoint.parents):
            if (folder / "config.json").is_file() and (folder / PROGRESS_FILE).exists():
                return json.loads((folder / "config.json").read_text(encoding="utf-8"))
        return {}

    def _prompt(self, instruction: str, answer: str | None = None) -> str:
        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": instruction}]}]
        text = self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        return text if answer is None else text + answer + "<|im_end|>"

    @torch.no_grad()
    def generate(self, images: list[Image.Image], instruction: str) -> list[str]:
        prompt = self._prompt(instruction)
        batch = self.processor(text=[prompt] * len(images), images=images, return_tensors="pt", padding=True).to(self.device)
        out = self.model.generate(**batch, max_new_tokens=self.max_new_tokens, do_sample=False)
        return self.processor.tokenizer.batch_decode(out[:, batch["input_ids"].shape[1] :], skip_special_tokens=True)

    @torch.no_grad()
    def label_log_probs(self, image: Image.Image, chunk: int = 64) -> torch.Tensor:
        """log P(label name | image, diagnosis instruction) for every taxonomy key (sorted keys)."""
        tokenizer = self.processor.tokenizer
        prompt = self._prompt(self.instructions["diagnosis"])
        scores = []
        for keys in _batches(self.keys, chunk):
            texts = [prompt + self.taxonomy.label(k).display + "<|im_end|>" for k in keys]
            batch = self.processor(text=texts, images=[image] * len(texts), return_tensors="pt", padding=True).to(self.device)
            logits = self.model(**batch).logits[:, :-1].float()
            targets = batch["input_ids"][:, 1:]
            token_lp = torch.log_softmax(logits, -1).gather(-1, targets[..., None])[..., 0]
            for row, key in enumerate(keys):
                # left padding: a row's answer tokens are its last ones (the prompt is the same for every row)
                answer_len = len(
                    tokenizer(self.taxonomy.label(key).display + "<|im_end|>", add_special_tokens=False)["input_ids"]
                )
                scores.append(token_lp[row, -answer_len:].sum())
        return torch.stack(scores)

    def predict(self, items: Iterable[dict[str, Any]], *, batch_size: int = 8, k: int = 6) -> Iterator[Prediction]:
        for batch in _batches(list(items), batch_size):
            images = [Image.open(item["path"]).convert("RGB") for item in batch]
            captions = self.generate(images, self.instructions["caption"])
            answers = self.generate(images, self.instructions["diagnosis"])
            for item, image, caption_text, answer in zip(batch, images, captions, answers, strict=True):
                probs = torch.softmax(self.label_log_probs(image), 0)
                top = torch.topk(probs, min(k, len(self.keys)))
                try:
                    caption, error = parse(caption_text).to_json(), None
                except CaptionError as e:
                    caption, error = None, str(e)
                yield Prediction(
                    image=str(item["image"]),
                    id=item.get("id"),
                    model_version=self.model_version,
                    caption=caption,
                    caption_text=caption_text,
                    caption_error=error,
                    diagnoses=[
                        RankedDiagnosis(
                            key=self.keys[i], score=round(float(probs[i]), 6), display=self.taxonomy.label(self.keys[i]).display
                        )
                        for i in top.indices.tolist()
                    ],
                    answer=answer,
                )


def load_predictor(checkpoint: str | Path):
    """The predictor for a run or checkpoint folder: a probe run's (trainer/probe.py) or a VLM checkpoint's."""
    from trainer.probe import ProbePredictor, probe_folder

    return ProbePredictor(checkpoint) if probe_folder(checkpoint) is not None else Predictor(checkpoint)


def predict_to_file(checkpoint: str | Path, manifest: str | Path, out: str | Path, *, batch_size: int = 8, k: int = 6) -> int:
    """Write one JSON line per image (atomically); returns how many."""
    predictor = load_predictor(checkpoint)
    return write_predictions(Path(out), predictor.predict(read_manifest(manifest), batch_size=batch_size, k=k))


def predict_held_out(run_dir: Path, data) -> Path | None:
    """Predict the export's val and test images (what the run did not train on) with the run's final model:
    <run>/held_out_predictions.jsonl, the workbench's held-out evidence for this run. None when both are empty."""
    items = []
    for split in ("val", "test"):
        try:
            items += data.split_images(split)
        except TrainerError:  # a small export may have no val or no test records
            continue
    if not items:
        return None
    manifest = run_dir / "held_out_images.jsonl"
    write_image_manifest(manifest, items)
    out = run_dir / HELD_OUT_FILE
    predict_to_file(run_dir, manifest, out)
    return out


def predict_split(checkpoint: str | Path, data, split: str, out_dir: str | Path) -> Path:
    """Predict every record of an export split (ExportData) with a checkpoint; returns out_dir/predictions.jsonl
    (its manifest, images.jsonl, is written beside it)."""
    items = data.split_images(split)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest = out_dir / "images.jsonl"
    write_image_manifest(manifest, items)
    predictions = out_dir / "predictions.jsonl"
    predict_to_file(checkpoint, manifest, predictions)
    return predictions
