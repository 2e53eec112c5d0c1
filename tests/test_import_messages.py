"""What an import says can be acted on: warnings once (not again on every rerun), counted by kind with all of them in a
report file; missing images name the files looked for; ids that already end in .jpg find their files; `status` tells
group codes from free text and counts skin-tone bands; the wrong-dataset error names each column once."""

from __future__ import annotations

import json

import pytest

from curation.errors import IngestError
from curation.ingest.csv_import import import_csv
from curation.ops.status import workbench_status
from tests.helpers import jpeg_bytes, photo, png_bytes, write
from tests.test_datasets import HAM_HEADER, write_csv


def test_warnings_come_once_counted_by_kind_and_missing_images_name_what_was_looked_for(wb, admin, tmp_path):
    rows = []
    for i in range(4):
        write(tmp_path / "images" / f"ISIC_{i:07d}.jpg", jpeg_bytes(photo(900 + i)))
        rows.append([f"HAM_{i}", f"ISIC_{i:07d}", "zzz" if i < 3 else "nv", "histo", "=1+1", "male", "back", "x"])
    rows.append(["HAM_9", "ISIC_0000009", "nv", "histo", "50", "male", "back", "x"])  # its image is not there
    metadata = write_csv(tmp_path / "HAM10000_metadata.csv", HAM_HEADER, rows)
    first = import_csv(wb, admin, metadata, images_dir=tmp_path / "images")
    assert first.warning_kinds == {"label kept as free text": 3, "formula cell": 4, "images not found": 1}
    assert any("looked for ISIC_0000009.jpg" in w and "--images-dir" in w for w in first.warnings)
    again = import_csv(wb, admin, metadata, images_dir=tmp_path / "images")
    assert again.already_present == 5 and set(again.warning_kinds) == {"images not found"}  # nothing new to warn about


def test_ids_that_already_end_in_jpg_find_their_files(wb, admin, tmp_path):
    rows = []
    for i in range(3):
        write(tmp_path / "images" / f"ISIC_{i:07d}.jpg", jpeg_bytes(photo(950 + i)))
        rows.append([f"HAM_{i}", f"ISIC_{i:07d}.jpg", "nv", "histo", "50", "male", "back", "x"])
    report = import_csv(wb, admin, write_csv(tmp_path / "m.csv", HAM_HEADER, rows), images_dir=tmp_path / "images")
    assert report.imported == 3 and report.missing_images == 0


def test_the_cli_writes_every_warning_to_a_report_file_when_it_shows_only_some(tmp_path):
    from tests.test_cli import run

    home = tmp_path / "wb"
    rows = []
    for i in range(25):
        write(tmp_path / "images" / f"ISIC_{i:07d}.jpg", jpeg_bytes(photo(1000 + i)))
        rows.append([f"HAM_{i}", f"ISIC_{i:07d}", f"code{i}", "histo", "50", "male", "back", "x"])
    metadata = write_csv(tmp_path / "HAM10000_metadata.csv", HAM_HEADER, rows)
    printed = run(home, "import", str(metadata), "--images-dir", str(tmp_path / "images")).stdout
    assert "warnings by kind: 25 label kept as free text" in printed
    report = json.loads(next((home / "reports").glob("import-*.json")).read_text())
    assert len(report["warning_items"]) == 25 and report["warnings_by_kind"] == {"label kept as free text": 25}


def test_status_tells_group_codes_from_free_text_and_counts_skin_tone_bands(wb, admin, tmp_path):
    rows = [
        [f"HAM_{i}", f"ISIC_{i:07d}", code, "histo", "50", "male", "back", "x"] for i, code in enumerate(["bkl", "zzz", "nv"])
    ]
    for i in range(3):
        write(tmp_path / "images" / f"ISIC_{i:07d}.jpg", jpeg_bytes(photo(1100 + i)))
    import_csv(wb, admin, write_csv(tmp_path / "HAM10000_metadata.csv", HAM_HEADER, rows), images_dir=tmp_path / "images")
    ddi = [["0", "1", "000001.png", "56", "True", "melanoma-in-situ"], ["1", "2", "000002.png", "12", "False", "melanoma"]]
    for index, row in enumerate(ddi):
        write(tmp_path / "ddi" / row[2], png_bytes(photo(1200 + index)))
    header = ["", "ddi_id", "ddi_file", "skin_tone", "malignant", "disease"]
    import_csv(wb, admin, write_csv(tmp_path / "ddi_metadata.csv", header, ddi), images_dir=tmp_path / "ddi")
    status = workbench_status(wb)
    assert (status["group_code_labels"], status["free_text_labels"]) == (1, 1)  # bkl names a group; zzz is free text
    assert status["by_fitzpatrick"] == {"unknown": 3, "band I-II": 1, "band V-VI": 1}


def test_the_wrong_dataset_error_names_each_missing_column_once(wb, admin, tmp_path):
    metadata = write_csv(tmp_path / "other.csv", ["image", "note"], [["a.jpg", "x"]])
    with pytest.raises(IngestError) as refused:
        import_csv(wb, admin, metadata, dataset="ham10000")
    listed = str(refused.value).split("lacks the column(s) ")[1].split(". ")[0].split(", ")
    assert listed == ["lesion_id", "image_id", "dx", "dx_type"]  # each once (dx and image_id were listed twice)
