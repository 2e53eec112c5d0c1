"""Export formats beyond the canonical JSONL + Parquet. Each writer takes the staging folder and the
records (curation/export/dataset.py collects them) and writes its own files; paths inside are relative to the
export folder, whose `images/` every format shares."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any
from xml.sax.saxutils import quoteattr

from curation.assist.drafts import LatestDraft
from schema.caption import SCHEMA_VERSION, json_schema
from schema.fields import FIELDS, ORDINAL_VALUES
from schema.files import neutralise_formula
from schema.taxonomy import Taxonomy
from schema.vocabulary import default_vocabulary

EXTRA_FORMATS = ("hf", "grpo", "sharegpt", "labelstudio", "csv")
CAPTION_INSTRUCTION = (
    "Describe the skin lesion in this image with the 11-field caption schema: one 'Field: values' line for "
    "each of Color, Location, Shape, Lesion type, Number, Size, Texture, Border/surface, Distribution, "
    "Surrounding and Other; write 'none' when a field does not apply."
)
DIAGNOSIS_INSTRUCTION = "List up to 6 diagnoses for the skin lesion in this image, most likely first, one per line."
LABEL_STUDIO_IMAGE_PREFIX = "/data/local-files/?d="  # Label Studio local storage, document root = the export folder


# Spreadsheet programs run a cell that starts with one of these: imports warn, CSV writers quote it.
def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="\n") as handle:
        for row in rows:
            handle.write(json.dumps(row, sort_keys=True, ensure_ascii=False) + "\n")


HF_WRITER_BATCH = 64  # rows per Arrow record batch: 64 photos of a few MB at most, whatever the dataset's size


def write_hf(staging: Path, records: list[dict[str, Any]], taxonomy: Taxonomy, **_) -> None:
    """A datasets.DatasetDict (Image feature with the bytes embedded, ClassLabel over the whole taxonomy
    so ids are stable across exports, one column per caption field), saved with save_to_disk.

    Streamed: each split is written from a generator in record batches of HF_WRITER_BATCH rows to an Arrow file
    on disk (memory-mapped afterwards), so the peak memory does not grow with the dataset (every image of a split
    held at once took 2 GB for 1,500 photos). The cache is removed once the dataset is saved."""
    import shutil

    from datasets import ClassLabel, Dataset, DatasetDict, Features, Sequence, Value
    from datasets import Image as HFImage

    labels = sorted(taxonomy.labels)
    label_ids = {label: index for index, label in enumerate(labels)}
    columns: dict[str, Any] = {
        "image": HFImage(),
        "id": Value("int64"),
        "diagnosis": ClassLabel(names=labels),
        "diagnosis_text": Value("string"),
        "group9": Value("string"),
        "group3": Value("string"),
        "fitzpatrick": Value("int64"),
        "caption_text": Value("string"),
        "source": Value("string"),
        "source_id": Value("string"),  # the image's id in its source: traceable back to the original
        "label_kind": Value("string"),
        "label_provenance": Value("string"),
        "metadata_json": Value("string"),  # the imported metadata columns the export was asked for
        "split_group": Value("string"),  # images of one lesion, patient or near-duplicate set: for grouped CV
    }
    for f in FIELDS:
        columns[f.key] = Sequence(Value("string")) if f.kind == "multi" else Value("string")
    columns["size_mm"] = Value("float64")
    features = Features(columns)

    def rows(split: str):
        for r in records:
            if r["split"] != split:
                continue
            row = {"image": {"bytes": (staging / r["image"]).read_bytes(), "path": Path(r["image"]).name}, "id": r["id"]}
            row["diagnosis"] = label_ids.get(r["diagnosis_key"], -1)
            for key in ("diagnosis_text", "group9", "group3", "fitzpatrick", "caption_text", "source", "split_group"):
                row[key] = r[key]
            for key in ("source_id", "label_kind", "label_provenance"):
                row[key] = r[key]
            row["metadata_json"] = json.dumps(r["metadata"], sort_keys=True, ensure_ascii=False)
            for f in FIELDS:
                row[f.key] = r["caption"][f.key]
            row["size_mm"] = r["caption"]["size_mm"]
            yield row

    cache = staging / ".hf-cache"
    try:
        splits = {}
        for split in ("train", "val", "test"):
            if not any(r["split"] == split for r in records):
                continue  # an empty split saves as a folder `load_from_disk` cannot read: left out (the card says so)
            splits[split] = Dataset.from_generator(
                rows,
                features=features,
                cache_dir=str(cache),
                gen_kwargs={"split": split},
                writer_batch_size=HF_WRITER_BATCH,
                # the export's own id: the records are not hashed to name the cache (a second pass over them)
                fingerprint=f"skinflow-{staging.name}-{split}",
                split=split,
            )
        DatasetDict(splits).save_to_disk(str(staging / "hf"))
    finally:
        shutil.rmtree(cache, ignore_errors=True)


def write_grpo(staging: Path, records: list[dict[str, Any]], taxonomy: Taxonomy, weight_set: dict | None, **_) -> None:
    """What the trainer reads: stage 1 (image -> verified caption) and stage 2 (image -> diagnosis)
    rows, the weight set, the schema and the taxonomy, so training needs nothing from the database."""
    folder = staging / "grpo"
    stage1, stage2 = [], []
    for r in records:
        image = {
            "id": r["id"],
            "image": r["image"],
            "split": r["split"],
            "fitzpatrick": r["fitzpatrick"],
            "fitzpatrick_band": r["fitzpatrick_band"],  # evaluation reports band-only records by band
        }
        if r["label_kind"] != "source":  # an accepted source label has no curated caption to learn from
            stage1.append(
                {
                    **image,
                    "prompt": [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": CAPTION_INSTRUCTION}]}],
                    "caption": r["caption"],
                    "caption_text": r["caption_text"],
                }
            )
        if r["diagnosis_key"]:
            stage2.append(
                {
                    **image,
                    "prompt": [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": DIAGNOSIS_INSTRUCTION}]}],
                    "diagnosis_key": r["diagnosis_key"],
                    "group9": r["group9"],
                    "group3": r["group3"],
                }
            )
    _write_jsonl(folder / "stage1.jsonl", stage1)
    _write_jsonl(folder / "stage2.jsonl", stage2)
    fields = [f.key for f in FIELDS]
    weights = weight_set or {"name": "uniform (no active weight set)", "weights": {k: 1 / len(fields) for k in fields}}
    (folder / "weights.json").write_text(json.dumps(weights, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    vocab = default_vocabulary()
    schema = {
        "schema_version": SCHEMA_VERSION,
        "vocabulary_version": vocab.version,
        "json_schema": json_schema(),
        "fields": [{"key": f.key, "label": f.label, "kind": f.kind} for f in FIELDS],
        "ordinal_values": {k: list(v) for k, v in ORDINAL_VALUES.items()},
        "vocabulary": {k: {t: list(vocab.synonyms[k][t]) for t in vocab.terms[k]} for k in vocab.terms},
    }
    (folder / "schema.json").write_text(json.dumps(schema, indent=2, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")
    doc = {
        "_meta": {**taxonomy.meta, "version": taxonomy.version},
        "labels": {
            k: {"display": l.display, "nine_partition": l.group9, "three_partition": l.group3, "synonyms": list(l.synonyms)}
            for k, l in sorted(taxonomy.labels.items())
        },
    }
    (folder / "taxonomy.json").write_text(json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")
    (folder / "instructions.json").write_text(
        json.dumps({"caption": CAPTION_INSTRUCTION, "diagnosis": DIAGNOSIS_INSTRUCTION}, indent=2) + "\n", encoding="utf-8"
    )


def write_sharegpt(staging: Path, records: list[dict[str, Any]], **_) -> None:
    """LLaVA / LLaMA-Factory style conversations with image paths."""
    rows = []
    for r in records:
        turns = []
        if r["label_kind"] != "source":  # an accepted source label has no curated caption: no caption turn
            turns = [{"from": "human", "value": f"<image>\n{CAPTION_INSTRUCTION}"}, {"from": "gpt", "value": r["caption_text"]}]
        diagnosis = r["diagnosis_display"] or r["diagnosis_text"]
        if diagnosis:
            question = "What is the most likely diagnosis?" if turns else "<image>\nWhat is the most likely diagnosis?"
            turns += [{"from": "human", "value": question}, {"from": "gpt", "value": diagnosis}]
        if not turns:
            continue
        rows.append({"id": str(r["id"]), "image": r["image"], "split": r["split"], "conversations": turns})
    (staging / "sharegpt.json").write_text(json.dumps(rows, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


def label_studio_config(taxonomy: Taxonomy) -> str:
    """The Label Studio labelling config for the schema: an Image, a Choices per controlled or ordinal
    field, a TextArea for `other`, and the diagnosis as a searchable Taxonomy (group3 > group9 > label)."""
    vocab = default_vocabulary()
    lines = ["<View>", '  <Image name="image" value="$image" zoom="true"/>']
    for f in FIELDS:
        lines.append(f"  <Header value={quoteattr(f.label)}/>")
        if f.kind == "free":
            lines.append(f'  <TextArea name="{f.key}" toName="image" rows="2" maxSubmissions="1"/>')
            continue
        choice = "multiple" if f.kind == "multi" else "single"
        lines.append(f'  <Choices name="{f.key}" toName="image" choice="{choice}" showInline="true">')
        lines += [f"    <Choice value={quoteattr(term)}/>" for term in vocab.terms[f.key]]
        lines.append("  </Choices>")
    lines.append('  <Header value="Diagnosis"/>')
    lines.append('  <Taxonomy name="diagnosis" toName="image" maxUsages="1">')
    for group3 in taxonomy.groups3():
        lines.append(f"    <Choice value={quoteattr(group3)}>")
        for group9 in sorted({l.group9 for l in taxonomy.labels.values() if l.group3 == group3}):
            lines.append(f"      <Choice value={quoteattr(group9)}>")
            keys = sorted(k for k, l in taxonomy.labels.items() if l.group9 == group9 and l.group3 == group3)
            lines += [f"        <Choice value={quoteattr(k)} hint={quoteattr(taxonomy.labels[k].display)}/>" for k in keys]
            lines.append("      </Choice>")
        lines.append("    </Choice>")
    lines += ["  </Taxonomy>", "</View>"]
    return "\n".join(lines) + "\n"


def label_studio_result(caption: dict[str, Any], diagnosis_key: str | None, taxonomy: Taxonomy) -> list[dict[str, Any]]:
    """A caption (and diagnosis) as Label Studio result items."""
    result = []
    for f in FIELDS:
        value = caption.get(f.key)
        if f.kind == "free":
            if value:
                result.append({"from_name": f.key, "to_name": "image", "type": "textarea", "value": {"text": [value]}})
        elif value:
            result.append(
                {
                    "from_name": f.key,
                    "to_name": "image",
                    "type": "choices",
                    "value": {"choices": list(value) if f.kind == "multi" else [value]},
                }
            )
    if diagnosis_key in taxonomy.labels:
        label = taxonomy.labels[diagnosis_key]
        result.append(
            {
                "from_name": "diagnosis",
                "to_name": "image",
                "type": "taxonomy",
                "value": {"taxonomy": [[label.group3, label.group9, diagnosis_key]]},
            }
        )
    return result


def label_studio_predictions(drafts: list[LatestDraft], taxonomy: Taxonomy) -> list[dict[str, Any]]:
    """An image's drafts (LLM draft, model suggestion) as separate Label Studio predictions, each with its
    model_version and the score of its top diagnosis."""
    predictions = []
    for draft in drafts:
        top = (draft.diagnoses or [{}])[0]
        predictions.append(
            {
                "model_version": f"{draft.kind}:{draft.producer}:{draft.version}",
                "score": top.get("score"),
                "result": label_studio_result(draft.caption, top.get("key"), taxonomy),
            }
        )
    return predictions


def write_labelstudio(
    staging: Path, records: list[dict[str, Any]], taxonomy: Taxonomy, drafts: dict[int, list[LatestDraft]], **_
) -> None:
    """tasks.json (image via Label Studio local storage; the curated caption and diagnosis as the task's
    annotation, marked ground truth; the LLM draft and the model suggestion as separate predictions with
    model_version and score) and label_config.xml."""
    folder = staging / "labelstudio"
    folder.mkdir(parents=True, exist_ok=True)
    tasks = []
    for r in records:
        task = {
            "data": {
                "image": LABEL_STUDIO_IMAGE_PREFIX + r["image"],
                "skinflow_id": r["id"],
                "sha256": r["sha256"],
                "split": r["split"],
                "label_kind": r["label_kind"],
            },
            "predictions": label_studio_predictions(drafts.get(r["id"], []), taxonomy),
        }
        curated = label_studio_result(r["caption"], r["diagnosis_key"], taxonomy)
        if curated:  # what the dermatologists settled on: Label Studio shows it as the task's ground truth
            task["annotations"] = [{"result": curated, "ground_truth": bool(r["verified"]), "was_cancelled": False}]
        tasks.append(task)
    (folder / "tasks.json").write_text(json.dumps(tasks, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    (folder / "label_config.xml").write_text(label_studio_config(taxonomy), encoding="utf-8")


def write_csv(staging: Path, records: list[dict[str, Any]], **_) -> None:
    columns = [
        "id",
        "image",
        "sha256",
        "split",
        "diagnosis_key",
        "diagnosis_display",
        "diagnosis_text",
        "group9",
        "group3",
        "diagnosis_status",
        "fitzpatrick",
        "verified",
        "annotators",
        "reviewer",
        "source",
        "source_id",
        "source_label",
        "label_kind",
        "label_provenance",
        "image_license",
        "split_group",
        *[f.key for f in FIELDS],
        "size_mm",
        "caption_text",
    ]
    metadata = sorted({c for r in records for c in r["metadata"]})  # the columns the export was asked for
    with (staging / "records.csv").open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow([*columns, *(f"metadata.{c}" for c in metadata)])
        for r in records:
            flat = {
                **r,
                **{f"metadata.{c}": r["metadata"].get(c) for c in metadata},
                **{f.key: "; ".join(r["caption"][f.key]) if f.kind == "multi" else r["caption"][f.key] for f in FIELDS},
                "size_mm": r["caption"]["size_mm"],
                "annotators": "; ".join(r["annotators"]),
            }
            writer.writerow([neutralise_formula(flat[c]) for c in [*columns, *(f"metadata.{c}" for c in metadata)]])


WRITERS = {"hf": write_hf, "grpo": write_grpo, "sharegpt": write_sharegpt, "labelstudio": write_labelstudio, "csv": write_csv}
