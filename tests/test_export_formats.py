"""Leakage-safe splits, filters, extra formats, the dataset card and `verify`."""

from __future__ import annotations

import csv
import io
import json
import xml.etree.ElementTree as ET

import pytest
import yaml
from PIL import Image as PILImage
from sqlalchemy import select

from curation.assist.drafts import add_draft
from curation.errors import ExportError
from curation.export.canonical import verify_export
from curation.export.dataset import export_dataset
from curation.export.records import ExportFilter
from curation.labelling.annotate import review_annotation, submit_annotation
from curation.ops.demo import build_demo
from curation.store.auth import add_user, get_actor
from curation.store.models import Image
from tests.helpers import jpeg_bytes, photo, write

pytestmark = pytest.mark.database  # run again on PostgreSQL by `make test-postgres`


@pytest.fixture
def demo(wb):
    build_demo(wb, None, n=60, seed=0, verified_fraction=0.7, annotated_fraction=0.1)
    return wb, get_actor(wb, "admin")


def shapes(seed: int) -> PILImage.Image:
    """A picture with strong structure (dark blobs on light skin): dHash is stable on such images."""
    import random

    from PIL import ImageDraw

    rng = random.Random(seed)
    img = PILImage.new("RGB", (320, 240), (230, 200, 180))
    draw = ImageDraw.Draw(img)
    for _ in range(6):
        x, y, r = rng.randint(0, 320), rng.randint(0, 240), rng.randint(20, 60)
        draw.ellipse((x - r, y - r, x + r, y + r), fill=(rng.randint(20, 120), rng.randint(10, 60), rng.randint(10, 60)))
    return img


def test_holdout_labels_go_only_to_test_and_filters_select(demo, tmp_path):
    wb, admin = demo
    export_dataset(wb, admin, tmp_path / "zs", selection=ExportFilter(holdout_labels=("melanoma",)))
    records = [json.loads(line) for line in (tmp_path / "zs" / "records.jsonl").read_text().splitlines()]
    melanoma = [r for r in records if r["diagnosis_key"] == "melanoma"]
    assert melanoma and all(r["split"] == "test" for r in melanoma)
    assert any(r["split"] == "train" for r in records if r["diagnosis_key"] != "melanoma")
    export_dataset(wb, admin, tmp_path / "mal", selection=ExportFilter(groups=("malignant",), fitzpatrick=(1, 2, 3)))
    chosen = [json.loads(line) for line in (tmp_path / "mal" / "records.jsonl").read_text().splitlines()]
    assert chosen and all(r["group3"] == "malignant" and r["fitzpatrick"] in (1, 2, 3) for r in chosen)
    manifest = json.loads((tmp_path / "mal" / "manifest.json").read_text())
    assert manifest["filters"]["groups"] == ["malignant"] and manifest["filters"]["fitzpatrick"] == [1, 2, 3]


def test_every_format_is_written_and_readable(demo, tmp_path):
    wb, admin = demo
    add_draft(
        wb,
        admin,
        1,
        kind="llm",
        producer="gpt-x",
        version="caption-v1+schema1",
        caption={"color": ["brown"], "number": "single"},
        diagnoses=[{"key": "melanoma", "text": "melanoma", "score": 0.8}],
    )
    with wb.session() as s:
        other = s.scalar(select(Image.id).where(Image.status == "verified", Image.id != 1).order_by(Image.id))
    add_draft(
        wb,
        admin,
        other,
        kind="routed",
        producer="router",
        version="evidence-abc",
        caption={"color": ["black"]},
        diagnoses=[{"key": "melanoma", "score": 0.5}],
        meta={"fields": {"color": "llm:gpt-x:caption-v1+schema1"}},
    )
    result = export_dataset(wb, admin, tmp_path / "all", formats=("hf", "grpo", "sharegpt", "labelstudio", "csv"))
    out = result.path
    from datasets import load_from_disk

    hf = load_from_disk(str(out / "hf"))
    assert sum(len(hf[s]) for s in ("train", "val", "test")) == result.n_records
    row = hf["train"][0]
    assert hf["train"].features["diagnosis"].int2str(row["diagnosis"]) in {
        "melanoma",
        "psoriasis",
        "acne vulgaris",
        "vitiligo",
        "urticaria",
        "nevocytic nevus",
        "basal cell carcinoma",
        "seborrheic keratosis",
    }
    assert row["image"].size == (256, 256) and isinstance(row["color"], list)

    stage1 = [json.loads(line) for line in (out / "grpo" / "stage1.jsonl").read_text().splitlines()]
    stage2 = [json.loads(line) for line in (out / "grpo" / "stage2.jsonl").read_text().splitlines()]
    assert len(stage1) == result.n_records and len(stage2) == result.n_records
    assert (out / stage1[0]["image"]).exists() and stage1[0]["prompt"][0]["content"][0] == {"type": "image"}
    assert stage2[0]["group3"] in ("benign", "malignant", "non-neoplastic")
    weights = json.loads((out / "grpo" / "weights.json").read_text())
    assert abs(sum(weights["weights"].values()) - 1) < 1e-9
    assert len(json.loads((out / "grpo" / "taxonomy.json").read_text())["labels"]) == 114
    assert json.loads((out / "grpo" / "schema.json").read_text())["json_schema"]["additionalProperties"] is False

    sharegpt = json.loads((out / "sharegpt.json").read_text())
    assert sharegpt[0]["conversations"][0]["value"].startswith("<image>") and (out / sharegpt[0]["image"]).exists()

    tasks = json.loads((out / "labelstudio" / "tasks.json").read_text())
    config = ET.fromstring((out / "labelstudio" / "label_config.xml").read_text())
    names = {e.get("name") for e in config.iter() if e.get("name")}
    assert {"image", "color", "number", "other", "diagnosis"} <= names
    task = next(t for t in tasks if t["data"]["skinflow_id"] == 1)
    assert task["data"]["image"].startswith("/data/local-files/?d=images/")
    [prediction] = task["predictions"]
    assert prediction["model_version"] == "llm:gpt-x:caption-v1+schema1" and prediction["score"] == 0.8
    assert {"from_name": "color", "to_name": "image", "type": "choices", "value": {"choices": ["brown"]}} in prediction["result"]
    assert any(r["type"] == "taxonomy" and r["value"]["taxonomy"][0][-1] == "melanoma" for r in prediction["result"])
    record = next(json.loads(line) for line in (out / "records.jsonl").read_text().splitlines() if json.loads(line)["id"] == 1)
    [curated] = task["annotations"]  # the curated labels travel as the task's annotation, not only as drafts
    assert curated["ground_truth"] is record["verified"] is True
    assert {"from_name": "color", "to_name": "image", "type": "choices", "value": {"choices": record["caption"]["color"]}} in (
        curated["result"]
    )
    assert any(r["type"] == "taxonomy" and r["value"]["taxonomy"][0][-1] == record["diagnosis_key"] for r in curated["result"])
    routed = next(t for t in tasks if t["data"]["skinflow_id"] == other)["predictions"]
    assert [p["model_version"] for p in routed] == ["routed:router:evidence-abc"]  # the best-source prefill, as a prediction

    rows = list(csv.DictReader((out / "records.csv").open(encoding="utf-8")))
    assert len(rows) == result.n_records and rows[0]["caption_text"].startswith("Color:")
    assert verify_export(out) == []


def test_csv_neutralises_formula_cells(wb, admin, tmp_path):
    reviewer = add_user(wb, admin, "rev", "reviewer", "reviewer-pw-1")[0]
    annotator = add_user(wb, admin, "ann", "annotator", "annotator-pw-1")[0]
    write(tmp_path / "in" / "a.jpg", jpeg_bytes(photo(3)))
    (tmp_path / "in.csv").write_text('path,label\nin/a.jpg,"=HYPERLINK(""http://evil"")"\n')
    from curation.ingest.csv_import import import_csv

    [image_id] = import_csv(wb, admin, tmp_path / "in.csv").image_ids
    aid = submit_annotation(
        wb, annotator, image_id, {"other": "=1+1 looks odd", "color": "red"}, diagnosis="@SUM(A1)", diagnosis_status="uncertain"
    )
    review_annotation(wb, reviewer, aid, "verified")
    export_dataset(wb, admin, tmp_path / "out", formats=("csv",))
    [row] = list(csv.DictReader((tmp_path / "out" / "records.csv").open(encoding="utf-8")))
    assert row["source_label"] == '\'=HYPERLINK("http://evil")' and row["other"] == "'=1+1 looks odd"
    assert row["diagnosis_text"] == "'@SUM(A1)" and row["color"] == "erythematous"


def test_dataset_card_has_header_sections_limitations_and_chart(demo, tmp_path):
    wb, admin = demo
    result = export_dataset(wb, admin, tmp_path / "v1", selection=ExportFilter(fitzpatrick=(1, 2)))
    card = (result.path / "README.md").read_text()
    header = yaml.safe_load(card.split("---")[1])
    assert header["license"] == "cc0-1.0" and "synthetic" in header["tags"] and header["size_categories"] == ["n<1K"]
    for section in (
        "## Motivation",
        "## Composition",
        "## Collection",
        "## Preprocessing",
        "## Known limitations",
        "## Licenses",
    ):
        assert section in card
    assert "No records of Fitzpatrick type(s) 3, 4, 5, 6" in card  # computed from the data
    assert "**Every record is synthetic**" in card
    assert PILImage.open(io.BytesIO((result.path / "fitzpatrick.png").read_bytes())).format == "PNG"


def test_verify_finds_changed_missing_and_extra_files(demo, tmp_path):
    wb, admin = demo
    out = export_dataset(wb, admin, tmp_path / "v1").path
    assert verify_export(out) == []
    (out / "records.jsonl").write_text("tampered\n")
    image = sorted((out / "images").rglob("*.jpg"))[0]
    image.unlink()
    (out / "extra.txt").write_text("x")
    problems = verify_export(out)
    assert "changed: records.jsonl" in problems and f"missing: {image.relative_to(out)}" in problems
    assert "not in the manifest: extra.txt" in problems
    with pytest.raises(ExportError, match="no readable manifest"):
        verify_export(tmp_path)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"formats": ("xlsx",)}, "unknown format"),
        ({"selection": ExportFilter(labels=("not a disease",))}, "not in the taxonomy"),
        ({"selection": ExportFilter(groups=("scary",))}, "unknown group"),
        ({"selection": ExportFilter(fitzpatrick=(9,))}, "1-6"),
    ],
)
def test_bad_export_requests_are_clear_and_write_nothing(demo, tmp_path, kwargs, match):
    wb, admin = demo
    with pytest.raises(ExportError, match=match):
        export_dataset(wb, admin, tmp_path / "x", **kwargs)
    assert not (tmp_path / "x").exists()


def test_label_studio_results_map_back_to_a_caption():
    from curation.export.labelstudio import caption_from_result

    caption, diagnosis = caption_from_result(
        [
            {"from_name": "shape", "value": {"choices": ["round", "oval"]}},
            {"from_name": "size", "value": {"choices": ["1-2 cm"]}},
            {"from_name": "other", "value": {"text": ["a", "b"]}},
            {"from_name": "diagnosis", "value": {"taxonomy": [["benign", "benign melanocyte", "halo nevus"]]}},
        ]
    )
    assert caption == {"shape": ["round", "oval"], "size": "1-2 cm", "other": "a b"} and diagnosis == "halo nevus"


def test_every_format_of_a_20_image_workbench_loads_with_its_consumer(tmp_path):
    """datasets for hf, json for the JSONL/ShareGPT/Label Studio files, pyarrow for Parquet, csv for the CSV, the
    trainer for grpo, and Label Studio's own config parser for its labelling config; val and test are not empty."""
    import csv

    import pyarrow.parquet as pq
    from datasets import load_from_disk
    from label_studio_sdk.label_interface import LabelInterface

    from curation.export.dataset import export_dataset
    from curation.ops.demo import build_demo
    from curation.store.auth import get_actor
    from curation.store.db import open_workbench
    from curation.store.settings import Settings
    from trainer.data import load_export

    wb = open_workbench(Settings.load(environ={}, home=tmp_path / "wb"))
    build_demo(wb, None, n=20, seed=0, verified_fraction=1.0, annotated_fraction=0.0)
    result = export_dataset(
        wb, get_actor(wb, "admin"), tmp_path / "export", formats=("hf", "grpo", "sharegpt", "labelstudio", "csv")
    )
    wb.close()
    folder = tmp_path / "export"
    assert all(result.by_split[split] > 0 for split in ("train", "val", "test")), result.by_split
    hf = load_from_disk(str(folder / "hf"))
    assert {split: len(hf[split]) for split in hf} == {s: n for s, n in result.by_split.items() if n}
    assert hf["train"][0]["image"].size[0] > 0  # the picture decodes
    records = [json.loads(line) for line in (folder / "records.jsonl").read_text().splitlines()]
    assert len(records) == result.n_records == pq.read_table(folder / "records.parquet").num_rows
    assert len(json.loads((folder / "sharegpt.json").read_text())) == result.n_records
    with (folder / "records.csv").open(newline="", encoding="utf-8") as handle:
        assert len(list(csv.DictReader(handle))) == result.n_records
    tasks = json.loads((folder / "labelstudio" / "tasks.json").read_text())
    interface = LabelInterface((folder / "labelstudio" / "label_config.xml").read_text())
    assert len(tasks) == result.n_records and interface.get_control("diagnosis")
    data = load_export(folder)
    assert data.rows(1, "test") and data.rows(2, "val")


def test_an_empty_split_is_left_out_of_the_hf_dataset_and_said_in_the_card(tmp_path):
    from datasets import load_from_disk

    from curation.export.dataset import export_dataset
    from curation.ops.demo import build_demo
    from curation.store.auth import get_actor
    from curation.store.db import open_workbench
    from curation.store.settings import Settings

    wb = open_workbench(Settings.load(environ={}, home=tmp_path / "wb"))
    build_demo(wb, None, n=4, seed=0, verified_fraction=0.25, annotated_fraction=0.0)  # two verified records
    result = export_dataset(wb, get_actor(wb, "admin"), tmp_path / "export", formats=("hf",))
    wb.close()
    empty = [split for split, n in result.by_split.items() if not n]
    assert empty  # two groups: too few for three splits
    hf = load_from_disk(str(tmp_path / "export" / "hf"))  # loads, without the empty split
    assert set(hf) == {split for split, n in result.by_split.items() if n}
    card = (tmp_path / "export" / "README.md").read_text()
    assert "the hf dataset has no such split" in card and "Tiny split(s)" in card
