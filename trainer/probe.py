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

One module on purpose: encoder, cache, heads, their fitting and decoding are one model, read top to bottom like
trainer/model.py, in `# --` sections; trainer/train.py and trainer/predict.py dispatch to it by preset and by
probe.json.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from safetensors.torch import load_file, save_file
from torch import nn
from torch.nn import functional as F

from schema.caption import render, validate_caption
from schema.compare import ordinal_score, set_f1
from schema.fields import MULTI_FIELDS, ORDINAL_VALUES
from schema.files import write_atomic, write_json_atomic
from schema.run_files import PROGRESS_FILE, Prediction, RankedDiagnosis, RunProgress, write_progress
from schema.taxonomy import load_taxonomy
from trainer.config import TrainConfig
from trainer.data import ExportData
from trainer.errors import TrainerError

PROBE_FILE = "probe.json"
HEADS_FILE = "heads.safetensors"
CACHE_FOLDER = "embedding-cache"
THRESHOLDS = np.round(np.arange(0.05, 0.951, 0.05), 2)


# -- encoder ----------------------------------------------------------------------------------------
def _encoder_classes() -> dict[str, type]:
    from transformers import CLIPVisionModel, SiglipVisionModel

    return {
        "clip": CLIPVisionModel,
        "clip_vision_model": CLIPVisionModel,
        "siglip": SiglipVisionModel,
        "siglip_vision_model": SiglipVisionModel,
    }


def build_encoder(image_size: int, seed: int):
    """A small CLIP vision tower with random weights (seeded) and its image processor: what tests and the demo
    use, since nothing may be downloaded there. Random features still carry colour and layout."""
    from transformers import CLIPVisionConfig, CLIPVisionModel
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    torch.manual_seed(seed)
    config = CLIPVisionConfig(
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=4,
        image_size=image_size,
        patch_size=max(8, image_size // 8),
    )
    processor = CLIPImageProcessorPil(size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size})
    return CLIPVisionModel(config).eval(), processor


def load_encoder(source: str | Path):
    """A pretrained CLIP or SigLIP vision tower and its image processor, from a local folder or a hub id (the
    hub is only reached where the machine has network)."""
    from transformers import AutoConfig, AutoImageProcessor

    try:
        config = AutoConfig.from_pretrained(str(source))
    except (OSError, ValueError) as e:
        raise TrainerError(
            f"cannot load the image encoder {source!r} ({str(e).splitlines()[0]}); give a local folder holding a "
            "CLIP or SigLIP checkpoint (config.json, weights, preprocessor_config.json) or a hub id on a machine "
            "with network"
        ) from None
    classes = _encoder_classes()
    if config.model_type not in classes:
        raise TrainerError(
            f"{source!r} is a {config.model_type!r} model; the probe takes a CLIP or SigLIP vision tower "
            f"(model types: {', '.join(classes)})"
        )
    model = classes[config.model_type].from_pretrained(str(source), dtype=torch.float32)
    processor = AutoImageProcessor.from_pretrained(str(source), backend="pil")
    return model.eval(), processor


_PREPROCESSING = (
    "size",
    "crop_size",
    "do_resize",
    "do_center_crop",
    "do_rescale",
    "rescale_factor",
    "do_normalize",
    "image_mean",
    "image_std",
    "resample",
)


def encoder_fingerprint(model: nn.Module, processor) -> str:
    """What the cached features depend on: the weights and the preprocessing. Changing either (another
    checkpoint under the same folder name) gives another fingerprint, so stale features are never reused."""
    digest = hashlib.blake2b(digest_size=16)
    settings = {name: getattr(processor, name, None) for name in _PREPROCESSING}
    digest.update(json.dumps(settings, sort_keys=True, default=str).encode())
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().to(torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()


def file_sha256(path: Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


class FeatureExtractor:
    """Pooled encoder features for image files, through a cache of one .npy per image sha256 (the same
    picture under another name, or in the next export, is not encoded again)."""

    def __init__(self, model: nn.Module, processor, cache_dir: Path | None, *, batch_size: int = 16):
        self.model, self.processor, self.batch_size = model, processor, batch_size
        self.fingerprint = encoder_fingerprint(model, processor)
        self.cache = cache_dir / self.fingerprint if cache_dir is not None else None
        self.encoded = 0  # images run through the encoder (not found in the cache)

    def _cached(self, sha: str) -> Path | None:
        return None if self.cache is None else self.cache / sha[:2] / f"{sha}.npy"

    @torch.inference_mode()
    def encode(self, images: list[Image.Image]) -> np.ndarray:
        pixels = self.processor(images=images, return_tensors="pt")["pixel_values"]
        return self.model(pixel_values=pixels).pooler_output.float().numpy()

    def __call__(self, paths: list[Path], on_batch: Callable[[int], None] | None = None) -> np.ndarray:
        shas = [file_sha256(p) for p in paths]
        features: dict[str, np.ndarray] = {}
        for sha in set(shas):
            cached = self._cached(sha)
            if cached is not None and cached.is_file():
                try:
                    features[sha] = np.load(cached)
                except (OSError, ValueError):
                    pass  # a damaged cache file is encoded again and overwritten
        todo = list({sha: path for sha, path in zip(shas, paths, strict=True) if sha not in features}.items())
        for start in range(0, len(todo), self.batch_size):
            batch = todo[start : start + self.batch_size]
            images = []
            for _, path in batch:
                with Image.open(path) as image:
                    images.append(image.convert("RGB"))
            for (sha, _), vector in zip(batch, self.encode(images), strict=True):
                features[sha] = vector
                cached = self._cached(sha)
                if cached is not None:
                    buffer = io.BytesIO()
                    np.save(buffer, vector)
                    write_atomic(cached, buffer.getvalue())
            self.encoded += len(batch)
            if on_batch:
                on_batch(min(start + self.batch_size, len(todo)))
        return np.stack([features[sha] for sha in shas]) if shas else np.zeros((0, 0), np.float32)


# -- heads ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Layout:
    """Which output column of the linear layer means what."""

    terms: dict[str, list[str]]  # multi-value field -> the terms seen in training
    labels: list[str]  # taxonomy keys, sorted

    def heads(self) -> list[tuple[str, int]]:
        """(head name, width) in column order: "multi:<field>", "present:<field>", "cumulative:<field>",
        "diagnosis"."""
        # schema order, not the dict's: probe.json is written with sorted keys
        out = [(f"multi:{field}", len(self.terms[field])) for field in MULTI_FIELDS]
        for field, levels in ORDINAL_VALUES.items():
            out += [(f"present:{field}", 1), (f"cumulative:{field}", len(levels) - 1)]
        return out + [("diagnosis", len(self.labels))]

    def slices(self) -> dict[str, slice]:
        out, start = {}, 0
        for name, width in self.heads():
            out[name] = slice(start, start + width)
            start += width
        return out

    @property
    def width(self) -> int:
        return sum(width for _, width in self.heads())


@dataclass
class Targets:
    """What the heads learn, one row per training image; rows without a caption (or diagnosis) are masked."""

    multi: dict[str, torch.Tensor]  # field -> (N, terms) 0/1
    level: dict[str, torch.Tensor]  # ordinal field -> (N,) level index, -1 for "none"
    has_caption: torch.Tensor  # (N,) bool
    label: torch.Tensor  # (N,) label index, -1 without a verified diagnosis

    def subset(self, index: torch.Tensor) -> Targets:
        return Targets(
            {k: v[index] for k, v in self.multi.items()},
            {k: v[index] for k, v in self.level.items()},
            self.has_caption[index],
            self.label[index],
        )


def training_records(data: ExportData, split: str = "train") -> list[dict[str, Any]]:
    """One record per image of a split: its path, verified caption (or None) and diagnosis key (or None)."""
    records: dict[Any, dict[str, Any]] = {}
    for stage, key, column in ((1, "caption", "caption"), (2, "diagnosis", "diagnosis_key")):
        for row in data.rows(stage, split):
            empty = {"id": row["id"], "path": data.image_path(row), "caption": None, "diagnosis": None}
            records.setdefault(row["id"], empty)[key] = row[column]
    return list(records.values())


def make_layout(records: list[dict[str, Any]], labels: Iterable[str]) -> Layout:
    terms = {field: sorted({t for r in records if r["caption"] for t in r["caption"].get(field) or ()}) for field in MULTI_FIELDS}
    return Layout(terms, sorted(labels))


def make_targets(records: list[dict[str, Any]], layout: Layout) -> Targets:
    n = len(records)
    multi = {field: torch.zeros(n, len(terms)) for field, terms in layout.terms.items()}
    level = {field: torch.full((n,), -1, dtype=torch.long) for field in ORDINAL_VALUES}
    has_caption = torch.zeros(n, dtype=torch.bool)
    label = torch.full((n,), -1, dtype=torch.long)
    index = {field: {t: i for i, t in enumerate(terms)} for field, terms in layout.terms.items()}
    label_index = {key: i for i, key in enumerate(layout.labels)}
    for row, record in enumerate(records):
        caption = record["caption"]
        if caption:
            has_caption[row] = True
            for field in layout.terms:
                for term in caption.get(field) or ():
                    multi[field][row, index[field][term]] = 1.0
            for field, levels in ORDINAL_VALUES.items():
                if caption.get(field) in levels:
                    level[field][row] = levels.index(caption[field])
        if record["diagnosis"] in label_index:
            label[row] = label_index[record["diagnosis"]]
    return Targets(multi, level, has_caption, label)


class Objective:
    """The heads' loss as a handful of tensor operations per step (the fits are many and small, so Python overhead
    per operation is what costs): the sum over heads of each head's mean loss over the rows it learns from."""

    def __init__(self, targets: Targets, layout: Layout):
        cut = layout.slices()
        self.captioned = targets.has_caption.nonzero()[:, 0]
        n = max(len(self.captioned), 1)
        multi = [(cut[f"multi:{field}"], targets.multi[field][self.captioned]) for field in layout.terms]
        self.multi_cols = torch.cat([torch.arange(c.start, c.stop) for c, _ in multi])
        self.multi_y = torch.cat([y for _, y in multi], 1)
        # each field's mean over its (rows x terms): weight 1 / (rows * terms) per cell of that field
        self.multi_w = torch.cat([torch.full((c.stop - c.start,), 1.0 / (n * max(c.stop - c.start, 1))) for c, _ in multi])
        levels = {field: targets.level[field][self.captioned] for field in ORDINAL_VALUES}
        self.present_cols = torch.tensor([cut[f"present:{field}"].start for field in ORDINAL_VALUES])
        self.present_y = torch.stack([(levels[field] >= 0).float() for field in ORDINAL_VALUES], 1)
        cum_cols, cum_y, cum_w = [], [], []
        for field, values in ORDINAL_VALUES.items():
            c, level = cut[f"cumulative:{field}"], levels[field]
            steps = torch.arange(1, len(values))
            shown = (level >= 0).float()
            cum_cols.append(torch.arange(c.start, c.stop))
            cum_y.append((level[:, None] >= steps[None, :]).float())
            # mean over the rows where the field has a value (and its K-1 thresholds); none: no loss
            cum_w.append(shown[:, None].expand(-1, len(steps)) / max(float(shown.sum()) * len(steps), 1.0))
        self.cum_cols, self.cum_y, self.cum_w = torch.cat(cum_cols), torch.cat(cum_y, 1), torch.cat(cum_w, 1)
        self.labelled = (targets.label >= 0).nonzero()[:, 0]
        self.label_y = targets.label[self.labelled]
        self.diagnosis = cut["diagnosis"]

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        loss = logits.sum() * 0
        if len(self.captioned):
            rows = logits[self.captioned]
            bce = F.binary_cross_entropy_with_logits
            loss = loss + bce(rows[:, self.multi_cols], self.multi_y, weight=self.multi_w, reduction="sum")
            loss = loss + bce(rows[:, self.present_cols], self.present_y, reduction="sum") / len(self.captioned)
            loss = loss + bce(rows[:, self.cum_cols], self.cum_y, weight=self.cum_w, reduction="sum")
        if len(self.labelled):
            loss = loss + F.cross_entropy(logits[self.labelled, self.diagnosis], self.label_y)
        return loss


def fit_heads(
    features: torch.Tensor,
    targets: Targets,
    layout: Layout,
    l2: dict[str, float],
    *,
    steps: int,
    learning_rate: float,
    seed: int,
    on_step: Callable[[int, float], None] | None = None,
) -> nn.Linear:
    """Full-batch Adam on the sum of the heads' losses plus each head's L2 penalty on its weights."""
    torch.manual_seed(seed)
    linear = nn.Linear(features.shape[1], layout.width)
    nn.init.zeros_(linear.weight)
    nn.init.zeros_(linear.bias)
    penalty = torch.zeros(layout.width)
    for name, cut in layout.slices().items():
        penalty[cut] = l2.get(name, l2["default"])
    optimiser = torch.optim.Adam(linear.parameters(), lr=learning_rate)
    objective = Objective(targets, layout)
    for step in range(steps):
        optimiser.zero_grad()
        loss = objective(linear(features))
        loss = loss + (penalty[:, None] * linear.weight.pow(2)).sum()
        loss.backward()
        optimiser.step()
        if on_step:
            on_step(step + 1, float(loss.detach()))
    return linear.eval()


# -- decoding ---------------------------------------------------------------------------------------
def ordinal_choice(present: np.ndarray, cumulative: np.ndarray) -> np.ndarray:
    """Per row, the level index (or -1 for "none") with the highest expected field score: 1 exact, 0.5 one
    level off, and "none" scores 1 only when the truth is none."""
    above = np.minimum.accumulate(1 / (1 + np.exp(-cumulative)), axis=1)  # P(level >= j), kept monotone
    ones = np.ones((len(above), 1))
    probs = np.concatenate([ones, above], 1) - np.concatenate([above, 0 * ones], 1)  # P(level = j)
    expected = probs.copy()
    expected[:, 1:] += 0.5 * probs[:, :-1]
    expected[:, :-1] += 0.5 * probs[:, 1:]
    p_present = 1 / (1 + np.exp(-present))
    best = expected.argmax(1)
    return np.where(p_present * expected.max(1) > 1 - p_present, best, -1)


def decode_captions(logits: np.ndarray, layout: Layout, thresholds: dict[str, float]) -> list[dict[str, Any]]:
    cut = layout.slices()
    probs = {field: 1 / (1 + np.exp(-logits[:, cut[f"multi:{field}"]])) for field in layout.terms}
    levels = {
        field: ordinal_choice(logits[:, cut[f"present:{field}"]][:, 0], logits[:, cut[f"cumulative:{field}"]])
        for field in ORDINAL_VALUES
    }
    out = []
    for row in range(len(logits)):
        caption: dict[str, Any] = {
            field: [t for t, p in zip(terms, probs[field][row], strict=True) if p >= thresholds.get(field, 0.5)]
            for field, terms in layout.terms.items()
        }
        for field, values in ORDINAL_VALUES.items():
            caption[field] = values[levels[field][row]] if levels[field][row] >= 0 else None
        out.append(caption)
    return out


def _truth(targets: Targets, layout: Layout, row: int) -> dict[str, Any]:
    caption: dict[str, Any] = {
        field: [t for t, on in zip(terms, targets.multi[field][row].tolist(), strict=True) if on]
        for field, terms in layout.terms.items()
    }
    for field, values in ORDINAL_VALUES.items():
        level = int(targets.level[field][row])
        caption[field] = values[level] if level >= 0 else None
    return caption


def _multi_scores(probs: np.ndarray, terms: list[str], truths: list[list[str]], threshold: float) -> float:
    """Mean set F1 of the terms above `threshold` against the true terms (the field score routing uses)."""
    chosen = probs >= threshold
    return float(
        np.mean(
            [
                set_f1([t for t, on in zip(terms, row, strict=True) if on], truth)
                for row, truth in zip(chosen, truths, strict=True)
            ]
        )
    )


def cross_validate(
    features: torch.Tensor, targets: Targets, layout: Layout, config: TrainConfig, on_fit: Callable[[], None]
) -> tuple[dict[str, float], dict[str, float], dict[str, Any]]:
    """Choose each head's L2 penalty and each multi-value field's threshold on out-of-fold predictions (by
    the mean field score; the diagnosis by its log-likelihood). Returns (penalty per head, threshold per
    field, the scores behind the choice)."""
    n, folds = len(features), min(config.probe_folds, len(features))
    if folds < 2 or n < 2 * folds:
        return {"default": config.probe_l2[len(config.probe_l2) // 2]}, {}, {"folds": 0}
    order = torch.randperm(n, generator=torch.Generator().manual_seed(config.seed))
    fold_of = torch.empty(n, dtype=torch.long)
    fold_of[order] = torch.arange(n) % folds
    captioned = np.flatnonzero(targets.has_caption.numpy())
    labelled = targets.label >= 0
    truths = [_truth(targets, layout, row) for row in captioned]
    cut = layout.slices()
    # per head: {l2: (score, threshold or None)}
    scores: dict[str, dict[float, tuple[float, float | None]]] = {}
    for l2 in config.probe_l2:
        oof = np.zeros((n, layout.width), dtype=np.float32)
        for fold in range(folds):
            held = fold_of == fold
            linear = fit_heads(
                features[~held],
                targets.subset(~held),
                layout,
                {"default": l2},
                steps=config.probe_steps,
                learning_rate=config.probe_learning_rate,
                seed=config.seed,
            )
            with torch.no_grad():
                oof[held.numpy()] = linear(features[held]).numpy()
            on_fit()
        if len(captioned):
            for field, terms in layout.terms.items():
                probs = 1 / (1 + np.exp(-oof[captioned, cut[f"multi:{field}"]]))
                field_truths = [truth[field] for truth in truths]
                best = max((_multi_scores(probs, terms, field_truths, th), -th) for th in THRESHOLDS)  # ties: higher
                scores.setdefault(f"multi:{field}", {})[l2] = (best[0], -best[1])
            for field, values in ORDINAL_VALUES.items():
                chosen = ordinal_choice(oof[captioned, cut[f"present:{field}"]][:, 0], oof[captioned, cut[f"cumulative:{field}"]])
                answers = [values[c] if c >= 0 else None for c in chosen]
                score = np.mean([ordinal_score(field, a, truth[field]) for a, truth in zip(answers, truths, strict=True)])
                scores.setdefault(f"ordinal:{field}", {})[l2] = (float(score), None)
        if labelled.any():
            log_probs = torch.log_softmax(torch.from_numpy(oof[labelled.numpy(), cut["diagnosis"]]), 1)
            likelihood = log_probs.gather(1, targets.label[labelled][:, None]).mean()
            scores.setdefault("diagnosis", {})[l2] = (float(likelihood), None)
    penalty: dict[str, float] = {"default": config.probe_l2[0]}
    thresholds: dict[str, float] = {}
    for key, by_l2 in scores.items():
        l2 = max(by_l2, key=lambda value: by_l2[value][0])  # ties: the first (smallest) penalty
        kind, _, field = key.partition(":")
        if kind == "multi":
            penalty[key], thresholds[field] = l2, float(by_l2[l2][1])
        elif kind == "ordinal":
            penalty[f"present:{field}"] = penalty[f"cumulative:{field}"] = l2
        else:
            penalty[key] = l2
    report = {"folds": folds, "scores": {key: {str(l2): round(v[0], 4) for l2, v in by.items()} for key, by in scores.items()}}
    return penalty, thresholds, report


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
