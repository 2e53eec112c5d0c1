"""The `probe` preset: a frozen image encoder and linear heads, trained in seconds on a CPU.

    encoder   a CLIP or SigLIP vision tower loaded with transformers and never trained: `model` is its hub id
              or local folder (a CLIPModel / SiglipModel checkpoint, or a vision-only one); without `model`, a
              small CLIP vision tower built from config with random weights (tests, the demo: no hub).
    features  the encoder's pooled output per image, cached per image sha256 and encoder fingerprint
              (<runs>/embedding-cache/<fingerprint>/), standardised with the training split's mean and std.
    heads     one linear layer, read in parts: per multi-value field one logistic output per term seen in the
              training captions (a term is kept above the field's threshold); per ordinal field a "present"
              logit and cumulative logits P(level > j), decoded to the answer with the highest expected field
              score ("none" included); the diagnosis, a softmax over the export's taxonomy.
    fitting   full-batch Adam on the heads' cross-entropies plus an L2 penalty. The penalty of each head and
              the threshold of each multi-value field are chosen by K-fold cross-validation on the training
              split (field score, or the diagnosis log-likelihood, on out-of-fold predictions); the heads are
              then refit on the whole training split.

The free-text field (`other`) stays empty: a linear head does not write prose. runs/<id>/model/ holds
probe.json (layout, thresholds, standardisation, encoder reference and fingerprint), heads.safetensors,
taxonomy.json and, for a built encoder, encoder/. Predictions have trainer/predict.py's shape.

Three modules, read in this order: trainer/probe_encoder.py (the encoder and the feature cache),
trainer/probe_heads.py (the heads, their fitting, decoding and cross-validation) and this one (training a run,
predicting with it); trainer/train.py and trainer/predict.py dispatch here by preset and by probe.json.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from schema.caption import render, validate_caption
from schema.files import write_json_atomic
from schema.run_files import PROGRESS_FILE, Prediction, RankedDiagnosis, RunProgress, write_progress
from schema.taxonomy import load_taxonomy
from trainer.config import TrainConfig
from trainer.data import ExportData
from trainer.errors import TrainerError
from trainer.probe_encoder import FeatureExtractor, build_encoder, load_encoder
from trainer.probe_heads import (
    Layout,
    cross_validate,
    decode_captions,
    fit_heads,
    make_layout,
    make_targets,
    training_records,
)

PROBE_FILE = "probe.json"
HEADS_FILE = "heads.safetensors"
CACHE_FOLDER = "embedding-cache"


# -- training ---------------------------------------------------------------------------------------
class _Cancelled(Exception):
    """<run>/cancel (or the caller's cancel file) appeared: stop at the next batch or fit."""


def _progress(run_dir: Path, status: str, step: int, max_steps: int, stage_name: str) -> None:
    write_progress(
        run_dir,
        RunProgress(
            status=status,
            stage="probe",
            stage_name=stage_name,
            stages=["probe"],
            stage_index=0,
            step=step,
            max_steps=max_steps,
            pid=os.getpid(),
            updated=time.time(),
        ),
    )


def _log(run_dir: Path, row: dict[str, Any]) -> None:
    with (run_dir / "metrics.jsonl").open("a", encoding="utf-8") as handle:
        handle.write(json.dumps({"stage": "probe", **row}, sort_keys=True) + "\n")


def encoder_for(config: TrainConfig):
    """(model, processor, reference): the configured encoder, or the built one (saved in the run so that
    predictions use the very same weights)."""
    if config.model:
        model, processor = load_encoder(config.model)
        return model, processor, {"source": str(config.model)}
    model, processor = build_encoder(config.image_size, config.seed)
    return model, processor, {"source": None, "built": {"image_size": config.image_size, "seed": config.seed}}


def train_probe(config: TrainConfig, run_dir: Path, data: ExportData, cancel_files: list[Path]) -> bool:
    """Fit the heads and write <run>/model/; False when cancelled (nothing half-written is left as model/)."""
    start = time.monotonic()
    records = training_records(data)
    if not records:
        raise TrainerError("the export has no training images; export more verified images")
    model, processor, reference = encoder_for(config)
    cache = Path(config.embedding_cache) if config.embedding_cache else run_dir.parent / CACHE_FOLDER
    extractor = FeatureExtractor(model, processor, cache, batch_size=config.embed_batch_size)

    def report(done: int, total: int, stage_name: str) -> None:
        _progress(run_dir, "running", done, total, stage_name)
        if any(path.exists() for path in cancel_files):  # checked at every batch and fit: a stop takes seconds
            raise _Cancelled

    paths = [r["path"] for r in records]
    fits = len(config.probe_l2) * config.probe_folds
    done = [0]

    def on_fit() -> None:
        done[0] += 1
        report(done[0], fits + 1, "choosing penalties (cross-validation)")

    try:
        report(0, len(paths), "embedding images")
        raw = extractor(paths, on_batch=lambda count: report(count, len(paths), "embedding images"))
        _log(
            run_dir,
            {"step": 0, "images": len(paths), "encoded": extractor.encoded, "seconds": round(time.monotonic() - start, 3)},
        )
        mean, std = raw.mean(0), raw.std(0) + 1e-6
        features = torch.from_numpy((raw - mean) / std).float()
        layout = make_layout(records, data.taxonomy.labels)
        targets = make_targets(records, layout)
        penalty, thresholds, cv = cross_validate(features, targets, layout, config, on_fit)
    except _Cancelled:
        return False
    _progress(run_dir, "running", fits, fits + 1, "fitting the heads")

    def on_step(step: int, loss: float) -> None:
        if step % 10 == 0 or step == config.probe_steps:
            _log(run_dir, {"step": step, "loss": round(loss, 6), "seconds": round(time.monotonic() - start, 3)})

    linear = fit_heads(
        features,
        targets,
        layout,
        penalty,
        steps=config.probe_steps,
        learning_rate=config.probe_learning_rate,
        seed=config.seed,
        on_step=on_step,
    )
    staging = run_dir / ".model.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    if reference["source"] is None:
        model.save_pretrained(staging / "encoder")
        processor.save_pretrained(staging / "encoder")
    save_file({"weight": linear.weight.detach().contiguous(), "bias": linear.bias.detach().contiguous()}, staging / HEADS_FILE)
    shutil.copyfile(data.folder / "grpo" / "taxonomy.json", staging / "taxonomy.json")
    write_json_atomic(
        staging / PROBE_FILE,
        {
            "kind": "probe",
            "run_id": config.run_id,
            "encoder": {**reference, "fingerprint": extractor.fingerprint, "dim": int(raw.shape[1])},
            "terms": layout.terms,
            "labels": layout.labels,
            "thresholds": thresholds,
            "penalty": penalty,
            "cross_validation": cv,
            "mean": mean.tolist(),
            "std": std.tolist(),
            "train_images": len(records),
            "seconds": round(time.monotonic() - start, 3),
        },
    )
    model_dir = run_dir / "model"
    if model_dir.is_symlink() or model_dir.is_file():
        model_dir.unlink()
    elif model_dir.is_dir():
        shutil.rmtree(model_dir)
    os.replace(staging, model_dir)
    return True


# -- prediction -------------------------------------------------------------------------------------
def probe_folder(checkpoint: str | Path) -> Path | None:
    """The probe's model folder for a run folder or a model folder; None when it is not a probe."""
    checkpoint = Path(checkpoint)
    for folder in (checkpoint / "model", checkpoint):
        if (folder / PROBE_FILE).is_file():
            return folder
    return None


class ProbePredictor:
    """A trained probe: the encoder it was fitted on (checked by fingerprint) and its heads."""

    def __init__(self, checkpoint: str | Path, *, batch_size: int = 16):
        folder = probe_folder(checkpoint)
        if folder is None:
            raise TrainerError(f"{checkpoint} is not a probe run (no {PROBE_FILE}); pass runs/<id> of a probe run")
        self.doc = json.loads((folder / PROBE_FILE).read_text(encoding="utf-8"))
        encoder = self.doc["encoder"]
        if encoder["source"] is None:
            model, processor = load_encoder(folder / "encoder")
        else:
            model, processor = load_encoder(encoder["source"])
        run_dir = folder.parent
        cache = run_dir.parent / CACHE_FOLDER if (run_dir / PROGRESS_FILE).exists() else None
        self.extractor = FeatureExtractor(model, processor, cache, batch_size=batch_size)
        if self.extractor.fingerprint != encoder["fingerprint"]:
            raise TrainerError(
                f"the image encoder {encoder['source'] or folder / 'encoder'} is not the one this probe was trained "
                "on (its weights or preprocessing changed); retrain the probe with the encoder you have now"
            )
        self.taxonomy = load_taxonomy(folder / "taxonomy.json")
        self.layout = Layout(self.doc["terms"], self.doc["labels"])
        heads = load_file(folder / HEADS_FILE)
        self.linear = nn.Linear(heads["weight"].shape[1], heads["weight"].shape[0])
        self.linear.load_state_dict(heads)
        self.mean, self.std = np.array(self.doc["mean"], np.float32), np.array(self.doc["std"], np.float32)
        self.model_version = f"{self.doc['run_id']}:probe"

    @torch.no_grad()
    def logits(self, paths: list[Path]) -> np.ndarray:
        raw = self.extractor(paths)
        return self.linear(torch.from_numpy((raw - self.mean) / self.std).float()).numpy()

    def predict(self, items: Iterable[dict[str, Any]], *, batch_size: int = 64, k: int = 6) -> Iterator[Prediction]:
        items = list(items)
        cut = self.layout.slices()["diagnosis"]
        for start in range(0, len(items), batch_size):
            batch = items[start : start + batch_size]
            logits = self.logits([Path(item["path"]) for item in batch])
            captions = decode_captions(logits, self.layout, self.doc["thresholds"])
            probs = torch.softmax(torch.from_numpy(logits[:, cut]), 1)
            for item, caption, row in zip(batch, captions, probs, strict=True):
                top = torch.topk(row, min(k, len(self.layout.labels)))
                diagnoses = [
                    RankedDiagnosis(key=key, score=round(float(row[i]), 6), display=self.taxonomy.label(key).display)
                    for i in top.indices.tolist()
                    for key in [self.layout.labels[i]]
                ]
                parsed = validate_caption(caption)
                yield Prediction(
                    image=str(item["image"]),
                    id=item.get("id"),
                    model_version=self.model_version,
                    caption=parsed.to_json(),
                    caption_text=render(parsed),
                    diagnoses=diagnoses,
                    answer=diagnoses[0].display if diagnoses else "",
                )
