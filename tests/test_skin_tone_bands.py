"""Skin tone used where it exists: DDI gives bands (I-II, III-IV, V-VI), not single types. Records carry the band,
the card counts it and never calls a band-covered type untested, the Fitzpatrick filter takes a band whose types it
names, and the evaluation reports band-only items by band instead of dropping them as unknown."""

from __future__ import annotations

from curation.export.dataset import export_dataset
from curation.export.records import ExportFilter
from curation.ingest.csv_import import import_csv
from curation.labelling.source_labels import verify_source_labels
from schema.fields import FIELD_KEYS
from schema.run_files import Prediction, RankedDiagnosis
from schema.taxonomy import default_taxonomy
from tests.helpers import photo, png_bytes, write
from tests.test_datasets import records, write_csv
from trainer.data import ExportData
from trainer.evaluate import evaluate


def test_ddi_bands_reach_the_records_the_card_the_filter_and_the_evaluation(wb, admin, tmp_path):
    header = ["", "ddi_id", "ddi_file", "skin_tone", "malignant", "disease"]
    tones = ["12", "12", "34", "34", "56", "56"]
    rows = [[str(i), str(i + 1), f"{i + 1:06d}.png", tone, "True", "melanoma"] for i, tone in enumerate(tones)]
    for i, row in enumerate(rows):
        write(tmp_path / "ddi" / row[2], png_bytes(photo(1700 + i)))
    import_csv(wb, admin, write_csv(tmp_path / "ddi_metadata.csv", header, rows), images_dir=tmp_path / "ddi")
    verify_source_labels(wb, admin, "ddi")
    export = export_dataset(wb, admin, tmp_path / "v1", selection=ExportFilter(label_kinds="source"), formats=("grpo",))
    out = records(export.path)
    assert sorted(r["fitzpatrick_band"] for r in out) == ["I-II", "I-II", "III-IV", "III-IV", "V-VI", "V-VI"]
    card = (export.path / "README.md").read_text()
    assert "| band V-VI | 2 |" in card and "untested" not in card and "have no Fitzpatrick type" not in card
    assert "known only as a band for 6 records" in card
    dark = export_dataset(
        wb, admin, tmp_path / "v2", selection=ExportFilter(label_kinds="source", fitzpatrick=(5, 6)), formats=()
    )
    assert {r["fitzpatrick_band"] for r in records(dark.path)} == {"V-VI"}
    from curation.labelling.browse import list_images

    shown, _ = list_images(wb, admin, fitzpatrick=[5, 6])  # the Dataset page's filter
    assert [row["fitzpatrick_band"] for row in shown] == ["V-VI", "V-VI"]
    assert list_images(wb, admin, fitzpatrick=[5])[1] == 0  # half a band says nothing about a V-VI image
    import json

    stage2 = [json.loads(line) for line in (export.path / "grpo" / "stage2.jsonl").read_text().splitlines()]
    test_rows = [{**row, "split": "test"} for row in stage2]
    data = ExportData(
        tmp_path,
        [],
        test_rows,
        {k: 1 / 11 for k in FIELD_KEYS},
        "uniform",
        default_taxonomy(),
        {"caption": "c", "diagnosis": "d"},
    )
    right = {
        row["id"]: Prediction(image=row["image"], model_version="m", id=row["id"], diagnoses=[RankedDiagnosis("melanoma", 0.9)])
        for row in test_rows
    }
    per_type = evaluate(right, data)["fitzpatrick"]["per_type"]
    assert per_type == {f"band {b}": {"n": 2, "top1": 1.0} for b in ("I-II", "III-IV", "V-VI")}
