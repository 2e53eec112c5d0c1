"""Which prefill saves annotators the most work? The demo set (300 synthetic images, seed 0): its verified images
are exported once; the tiny VLM preset and the probe preset are trained on that export as workbench runs (with
their held-out predictions, the evidence of what they are good at); both suggest for every image that still needs
work (none seen in training); the evidence picks a source per field and the routed draft is made for each of
those images. A simulated annotator ends at the true caption and label (the demo knows them): an edit = the field
of the prefill differs from the truth.

Reported per field: the edit rate starting from the demo's LLM-style noisy draft, the tiny VLM, the probe and the
routed prefill, with the goal routed mean <= best single source's mean + 0.01 and, per field, routed no worse
than the best single source by more than that source's 95% interval half-width. Then the probe's cost with real
encoder shapes (CLIP ViT-B/16 and ViT-L/14, random weights: speed does not depend on them): images per second of
feature extraction (file read, sha256, decode, preprocessing, forward, cache write) against a bare forward pass on
ready tensors (goal >= 0.8), and the seconds to train the probe on 1,000 records (extraction + heads).

    .venv/bin/python benchmarks/suggestions.py [--skip-speed] [--skip-edits]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sqlalchemy import select  # noqa: E402

from benchmarks.app import record, write_section  # noqa: E402
from curation.assist.evidence import interval, refresh_evidence  # noqa: E402
from curation.assist.routing import ensure_routed_draft  # noqa: E402
from curation.assist.suggestions import images_needing_work, import_predictions  # noqa: E402
from curation.export.dataset import export_dataset  # noqa: E402
from curation.ingest.demo import build_demo  # noqa: E402
from curation.ops.runs import run_dir  # noqa: E402
from curation.store.auth import get_actor  # noqa: E402
from curation.store.db import open_workbench  # noqa: E402
from curation.store.models import Draft, Export, Image, TrainingRun  # noqa: E402
from curation.store.settings import Settings  # noqa: E402
from schema.caption import validate_caption  # noqa: E402
from schema.compare import caption_scores  # noqa: E402
from schema.fields import FIELD_KEYS  # noqa: E402
from trainer.config import TrainConfig  # noqa: E402
from trainer.predict import predict_to_file  # noqa: E402
from trainer.train import train  # noqa: E402

TITLE = "Suggestion sources and the routed prefill (benchmarks/suggestions.py)"
SOURCES = {"synthetic": "LLM-style draft", "tiny": "tiny VLM", "probe": "probe", "routed": "routed prefill"}
SPEED_TITLE = "Probe cost with real encoder shapes (benchmarks/suggestions.py)"


def _train_as_run(wb, admin, export: Path, preset: str) -> tuple[int, float]:
    """A finished workbench run of `preset` on `export` (what Retrain does, in this process)."""
    with wb.session() as s:
        export_id = s.scalar(select(Export.id).where(Export.path == str(export.resolve())))
        row = TrainingRun(
            export_id=export_id, preset=preset, status="running", created_by=admin.id, config={"export_path": str(export)}
        )
        s.add(row)
        s.flush()
        run_id = row.id
    folder = run_dir(wb, run_id)
    start = time.perf_counter()
    train(TrainConfig.for_preset(preset, export=str(export), output_dir=str(folder.parent), run_id=folder.name))
    seconds = time.perf_counter() - start
    with wb.session() as s:
        s.get(TrainingRun, run_id).status = "done"
    return run_id, seconds


def _edits(draft: Draft | None, true_caption: dict, label: str) -> tuple[dict[str, float], float, float]:
    if draft is None or draft.caption is None:
        return {k: 1.0 for k in FIELD_KEYS}, 0.0, 0.0
    scores = caption_scores(validate_caption(draft.caption), validate_caption(true_caption))
    keys = [d["key"] for d in draft.diagnoses or []]
    return {k: float(v < 1.0) for k, v in scores.items()}, float(keys[:1] == [label]), float(label in keys[:6])


def bench_edits() -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        wb = open_workbench(Settings.load(environ={}, home=tmp / "wb"))
        build_demo(wb, None, n=300, seed=0)
        admin = get_actor(wb, "admin")
        export = tmp / "wb" / "exports" / "bench"
        export_dataset(wb, admin, export, formats=("grpo",))
        runs, seconds = {}, {}
        for preset, name in (("tiny", "tiny"), ("probe", "probe")):
            runs[name], seconds[name] = _train_as_run(wb, admin, export, preset)
        items = images_needing_work(wb)
        manifest = tmp / "queue.jsonl"
        manifest.write_text("".join(json.dumps(i) + "\n" for i in items))
        for name, run_id in runs.items():
            start = time.perf_counter()
            predict_to_file(run_dir(wb, run_id), manifest, tmp / f"{name}.jsonl")
            seconds[f"{name} suggest"] = time.perf_counter() - start
            import_predictions(wb, admin, tmp / f"{name}.jsonl")
        report = refresh_evidence(wb)
        chosen = dict(report.chosen)
        evidence_n = {e.source: {m: s.n for m, s in e.measures.items()} for e in report.sources}
        with wb.session() as s:
            images = s.scalars(select(Image).where(Image.id.in_([x["id"] for x in items]))).all()
            by_source: dict[str, dict[int, Draft | None]] = {name: {} for name in SOURCES}
            truth = {}
            for image in images:
                truth[image.id] = (image.meta["true_caption"], image.diagnosis_key)
                drafts = {d.version: d for d in image.drafts}
                by_source["synthetic"][image.id] = next((d for d in image.drafts if d.kind == "synthetic"), None)
                for name, run_id in runs.items():
                    by_source[name][image.id] = next((d for v, d in drafts.items() if v.startswith(f"run-{run_id}:")), None)
                by_source["routed"][image.id] = ensure_routed_draft(s, wb, image)
            per_item = {
                name: {image_id: _edits(draft, *truth[image_id]) for image_id, draft in drafts.items()}
                for name, drafts in by_source.items()
            }
        wb.close()
    return {"per_item": per_item, "chosen": chosen, "evidence_n": evidence_n, "seconds": seconds, "runs": runs, "n": len(truth)}


def report_edits(result: dict) -> None:
    per_item, n = result["per_item"], result["n"]
    rates = {
        name: {k: float(np.mean([edits[k] for edits, _, _ in items.values()])) for k in FIELD_KEYS}
        for name, items in per_item.items()
    }
    halfwidth = {}
    for name, items in per_item.items():
        for k in FIELD_KEYS:
            low, high = interval(np.array([edits[k] for edits, _, _ in items.values()])) or (0.0, 0.0)
            halfwidth[(name, k)] = (high - low) / 2
    mean = {name: float(np.mean(list(r.values()))) for name, r in rates.items()}
    singles = [name for name in SOURCES if name != "routed"]
    best_single = min(singles, key=lambda name: mean[name])
    lines = [
        f"Demo set (300 synthetic images, seed 0); the tiny VLM ({result['seconds']['tiny']:.0f} s) and the probe "
        f"({result['seconds']['probe']:.0f} s, built CLIP encoder with random weights) trained on its verified images "
        f"as workbench runs; suggestions for the {n} images still needing work (tiny {result['seconds']['tiny suggest']:.0f} s, "
        f"probe {result['seconds']['probe suggest']:.0f} s), none seen in training. Edit = the prefilled field differs "
        "from the truth; ± = half the 95% bootstrap interval. The last columns say which source the evidence chose for "
        "the routed prefill (on held-out images; n = its held-out items).",
        "",
        "| field | LLM-style draft | tiny VLM | probe | routed | routed − best single | within | chosen source (n) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    worse_fields = []
    for k in FIELD_KEYS:
        best = min(singles, key=lambda name: rates[name][k])
        gap = rates["routed"][k] - rates[best][k]
        within = gap <= halfwidth[(best, k)] + 1e-9
        if not within:
            worse_fields.append(k)
        source = result["chosen"].get(k)
        chosen = f"{source} ({result['evidence_n'][source][k]})" if source else "none: fallback order"
        cells = " | ".join(f"{rates[name][k]:.2f} ± {halfwidth[(name, k)]:.2f}" for name in SOURCES)
        lines.append(f"| {k} | {cells} | {gap:+.2f} | {'yes' if within else 'NO'} | {chosen} |")
    lines.append(
        "| **mean over fields** | " + " | ".join(f"**{mean[name]:.3f}**" for name in SOURCES) + f" | "
        f"{mean['routed'] - mean[best_single]:+.3f} vs {SOURCES[best_single]} | "
        f"{'yes' if mean['routed'] <= mean[best_single] + 0.01 else 'NO'} | |"
    )
    top = {
        name: (np.mean([t1 for _, t1, _ in items.values()]), np.mean([t6 for _, _, t6 in items.values()]))
        for name, items in per_item.items()
    }
    lines += [
        "",
        "| diagnosis | " + " | ".join(SOURCES.values()) + " |",
        "|---|---|---|---|---|",
        "| top-1 | " + " | ".join(f"{top[name][0]:.2f}" for name in SOURCES) + " |",
        "| top-6 (the LLM-style draft lists 3) | " + " | ".join(f"{top[name][1]:.2f}" for name in SOURCES) + " |",
        "",
        f"Routed diagnosis chosen source for top-1: {result['chosen'].get('diagnosis_top1') or 'none'}. Goal: routed mean "
        f"edit rate <= best single ({SOURCES[best_single]}, {mean[best_single]:.3f}) + 0.01: "
        f"{'met' if mean['routed'] <= mean[best_single] + 0.01 else 'NOT met'} ({mean['routed']:.3f}); fields where routed "
        f"is worse than the best single source by more than its interval: {', '.join(worse_fields) or 'none'}.",
    ]
    record(
        "routed prefill: mean edit rate per field (vs best single source)",
        mean["routed"],
        "share",
        mean[best_single],
        mean["routed"] - mean[best_single],
        "<= best single + 0.01 (ratio column: difference)",
        mean["routed"] <= mean[best_single] + 0.01,
    )
    record("probe: mean edit rate per field", mean["probe"], "share", mean["synthetic"], None, "for information", None)
    record("tiny VLM: mean edit rate per field", mean["tiny"], "share", mean["synthetic"], None, "for information", None)
    write_section(TITLE, lines)


# -- probe cost with real encoder shapes -------------------------------------------------------------------
ENCODERS = {
    "CLIP ViT-B/16": {
        "hidden_size": 768,
        "intermediate_size": 3072,
        "num_hidden_layers": 12,
        "num_attention_heads": 12,
        "patch_size": 16,
    },
    "CLIP ViT-L/14": {
        "hidden_size": 1024,
        "intermediate_size": 4096,
        "num_hidden_layers": 24,
        "num_attention_heads": 16,
        "patch_size": 14,
    },
}


def _images(folder: Path, count: int) -> list[Path]:
    """Photo-like 640x480 JPEGs (what a clinic camera export looks like, downsized)."""
    from PIL import Image as PILImage

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(count):
        base = rng.normal((205, 160, 140), 20, (60, 80, 3)).clip(0, 255).astype(np.uint8)
        image = PILImage.fromarray(base, "RGB").resize((640, 480), PILImage.BICUBIC)
        path = folder / f"{i}.jpg"
        image.save(path, quality=90)
        paths.append(path)
    return paths


def _heads_seconds(export: Path, dim: int, records: int = 1000) -> float:
    """Cross-validation + final fit of the heads on `records` rows of `dim` features (the demo's verified captions
    and labels resampled to that many; random features: the cost depends on the shapes only)."""
    import torch

    from trainer.data import load_export
    from trainer.probe import cross_validate, fit_heads, make_layout, make_targets, training_records

    data = load_export(export)
    base = training_records(data)
    rng = np.random.default_rng(0)
    rows = [base[i] for i in rng.integers(0, len(base), records)]
    config = TrainConfig.for_preset("probe")
    layout = make_layout(rows, data.taxonomy.labels)
    targets = make_targets(rows, layout)
    features = torch.from_numpy(rng.normal(size=(records, dim)).astype(np.float32))
    start = time.perf_counter()
    penalty, _, _ = cross_validate(features, targets, layout, config, lambda: None)
    fit_heads(features, targets, layout, penalty, steps=config.probe_steps, learning_rate=config.probe_learning_rate, seed=0)
    return time.perf_counter() - start


def bench_speed(images: int, tmp: Path) -> list[dict]:
    import torch
    from PIL import Image as PILImage
    from transformers import CLIPVisionConfig, CLIPVisionModel
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    from trainer.probe import FeatureExtractor

    wb = open_workbench(Settings.load(environ={}, home=tmp / "wb"))
    build_demo(wb, None, n=60, seed=0, verified_fraction=1.0, annotated_fraction=0.0)
    export_dataset(wb, get_actor(wb, "admin"), tmp / "export", formats=("grpo",))
    wb.close()
    paths = _images(tmp / "images", images)
    rows = []
    for name, shape in ENCODERS.items():
        torch.manual_seed(0)
        model = CLIPVisionModel(CLIPVisionConfig(image_size=224, **shape)).eval()
        extractor = FeatureExtractor(model, CLIPImageProcessorPil(), tmp / "cache", batch_size=16)
        with PILImage.open(paths[0]) as image:
            ready = extractor.processor(images=[image.convert("RGB")] * 16, return_tensors="pt")["pixel_values"]
        with torch.inference_mode():
            model(pixel_values=ready[:2])  # warm-up
            start = time.perf_counter()
            for done in range(0, images, 16):
                model(pixel_values=ready[: min(16, images - done)])
            bare = images / (time.perf_counter() - start)
        start = time.perf_counter()
        extractor(paths)
        extraction = images / (time.perf_counter() - start)
        heads = _heads_seconds(tmp / "export", shape["hidden_size"])
        rows.append({"encoder": name, "bare": bare, "extraction": extraction, "heads_s": heads})
        print(rows[-1], flush=True)
        del model, extractor
    return rows


def report_speed(rows: list[dict], images: int) -> None:
    import os

    lines = [
        f"{images} photo-like 640x480 JPEGs per encoder, batches of 16, {os.cpu_count()} cores, float32, random weights "
        "(speed does not depend on them). Extraction = read + sha256 + decode + preprocess (resize, crop, normalise) + "
        "forward + cache write; bare = forward on tensors already made. Heads = 3-fold cross-validation over 4 penalties "
        "+ the final fit (13 fits x 300 full-batch steps) on 1,000 records; training 1,000 records = 1,000 images "
        "extracted + heads (a retrain on the same images reads the cache and costs the heads only).",
        "",
        "| encoder | bare forward img/s | extraction img/s | ratio (goal >= 0.8) | heads s (1,000 records) | "
        "train s, 1,000 records | retrain s (cached) |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        ratio = row["extraction"] / row["bare"]
        total = 1000 / row["extraction"] + row["heads_s"]
        lines.append(
            f"| {row['encoder']} | {row['bare']:.1f} | {row['extraction']:.1f} | {ratio:.2f} | {row['heads_s']:.1f} | "
            f"{total:.0f} | {row['heads_s']:.0f} |"
        )
        record(
            f"probe feature extraction, {row['encoder']}",
            row["extraction"],
            "img/s",
            row["bare"],
            ratio,
            ">= 0.8 of bare forward",
            ratio >= 0.8,
        )
        record(f"probe training, 1,000 records, {row['encoder']}", total, "s", None, None, "for information", None)
    write_section(SPEED_TITLE, lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-edits", action="store_true")
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--speed-images", type=int, default=64, help="images timed per encoder")
    args = parser.parse_args()
    if not args.skip_edits:
        result = bench_edits()
        report_edits(result)
    if not args.skip_speed:
        with tempfile.TemporaryDirectory() as tmp:
            rows = bench_speed(args.speed_images, Path(tmp))
        report_speed(rows, args.speed_images)


if __name__ == "__main__":
    main()
