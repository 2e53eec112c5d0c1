"""CSV imports: generic columns and the Fitzpatrick17k file as they are, a parser that reads each row on its own
(tests of parse_row need no database), and every way a CSV can be wrong refused with what to do, row by row or
whole, before anything stored changes."""

import os
from pathlib import Path

import pytest
from sqlalchemy import func, select

from curation.errors import IngestError
from curation.ingest.csv_import import import_csv
from curation.store.models import Image as ImageRow
from tests.helpers import image_rows, jpeg_bytes, photo, write


# -- CSV ---------------------------------------------------------------------------------------------
def test_generic_csv_with_paths_labels_fitzpatrick_and_extra_metadata(wb, admin, tmp_path):
    write(tmp_path / "imgs" / "1.jpg", jpeg_bytes(photo(50)))
    write(tmp_path / "imgs" / "2.jpg", jpeg_bytes(photo(51)))
    (tmp_path / "meta.csv").write_text(
        "path,label,fitzpatrick,age,site\nimgs/1.jpg,BCC,III,71,nose\nimgs/2.jpg,Basal-cell carcinoma,5,64,\n", encoding="utf-8"
    )
    report = import_csv(wb, admin, tmp_path / "meta.csv")
    assert report.imported == 2 and not report.failed
    with wb.session() as s:
        rows = s.scalars(select(ImageRow).order_by(ImageRow.id)).all()
        assert [(r.diagnosis_key, r.fitzpatrick) for r in rows] == [("basal cell carcinoma", 3), ("basal cell carcinoma", 5)]
        assert rows[0].meta == {"age": "71", "site": "nose"} and rows[1].meta == {"age": "64"}


pytestmark = pytest.mark.database  # run again on PostgreSQL by `make test-postgres`


def test_fitzpatrick17k_csv_imports_as_is_and_rerun_adds_nothing(wb, admin, tmp_path):

    source = Path(__file__).resolve().parent / "data" / "fitzpatrick17k.csv"  # the real file (docs/datasets.md)
    lines = source.read_text(encoding="utf-8").splitlines()[:301]
    csv_path = tmp_path / "fitzpatrick17k.csv"
    csv_path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    first_md5 = lines[1].split(",")[0]
    write(tmp_path / "downloaded" / f"{first_md5}.jpg", jpeg_bytes(photo(60)))
    report = import_csv(wb, admin, csv_path, images_dir=tmp_path / "downloaded")
    assert report.imported == 1 and report.missing_images == 299 and not report.failed
    assert not report.warnings  # '-1' cells are numbers, not formulas
    with wb.session() as s:
        assert s.scalar(select(func.count()).where(ImageRow.status == "image_missing")) == 299
        row = s.scalar(select(ImageRow).where(ImageRow.external_id == first_md5))
        assert row.status == "pending" and row.source == "fitzpatrick17k"
        assert row.diagnosis_key == lines[1].split(",")[3] and "nine_partition_label" in row.meta
    before = image_rows(wb)
    again = import_csv(wb, admin, csv_path, images_dir=tmp_path / "downloaded")
    assert again.imported == 0 and again.already_present == 300 and image_rows(wb) == before


def _csv(tmp_path, text: str, encoding="utf-8"):
    path = tmp_path / "in.csv"
    path.write_bytes(text.encode(encoding))
    write(tmp_path / "ok.jpg", jpeg_bytes(photo(70)))
    return path


def test_csv_missing_image_columns_is_refused_before_writing_anything(wb, admin, tmp_path):
    with pytest.raises(IngestError, match=r"no image column.*need 'path'.*Nothing was imported"):
        import_csv(wb, admin, _csv(tmp_path, "filename_typo,label\nok.jpg,psoriasis\n"))
    assert image_rows(wb) == {}


def test_csv_that_is_not_utf8_is_refused_with_what_to_do(wb, admin, tmp_path):
    with pytest.raises(IngestError, match="not UTF-8.*re-save it as UTF-8"):
        import_csv(wb, admin, _csv(tmp_path, "path,label\nok.jpg,eczéma\n", encoding="latin-1"))


def test_csv_formula_cells_are_stored_as_plain_text_with_a_warning(wb, admin, tmp_path):
    report = import_csv(wb, admin, _csv(tmp_path, 'path,label,note\nok.jpg,=HYPERLINK("http://x"),@SUM(A1)\n'))
    assert report.imported == 1
    with wb.session() as s:
        row = s.scalar(select(ImageRow))
        assert row.source_label == '=HYPERLINK("http://x")' and row.meta == {"note": "@SUM(A1)"}
        assert row.diagnosis_key is None
    assert sum("spreadsheet formula" in w for w in report.warnings) == 2


def test_csv_unknown_label_is_kept_as_free_text_with_a_warning(wb, admin, tmp_path):
    report = import_csv(wb, admin, _csv(tmp_path, "path,label\nok.jpg,Mysterious purple thing\n"))
    assert report.imported == 1 and "not in the taxonomy" in report.warnings[0]
    with wb.session() as s:
        assert s.execute(select(ImageRow.source_label, ImageRow.diagnosis_key)).one() == ("Mysterious purple thing", None)


@pytest.mark.parametrize("value", ["9", "0", "7.5", "=1+1", "type two"])
def test_csv_bad_fitzpatrick_value_rejects_only_that_row(wb, admin, tmp_path, value):
    write(tmp_path / "ok2.jpg", jpeg_bytes(photo(71)))
    report = import_csv(wb, admin, _csv(tmp_path, f"path,fitzpatrick\nok.jpg,{value}\nok2.jpg,2\n"))
    assert report.imported == 1
    assert report.failed == [("in.csv line 2", f"Fitzpatrick type must be 1-6 (or I-VI; empty or -1 for unknown), got '{value}'")]


def test_csv_rows_with_missing_files_extra_cells_or_repeated_ids_are_reported(wb, admin, tmp_path):
    report = import_csv(wb, admin, _csv(tmp_path, "id,path\na,ok.jpg\nb,missing.jpg\nc,ok.jpg,surplus\na,ok.jpg\n"))
    assert report.imported == 1
    reasons = dict(report.failed)
    assert "file not found" in reasons["in.csv line 3"]
    assert "more cells than header columns" in reasons["in.csv line 4"]
    assert report.duplicates == [("in.csv line 5", "repeats id 'a' of line 2: ids are unique per source")]


def test_csv_url_only_rows_become_image_missing(wb, admin, tmp_path):
    report = import_csv(wb, admin, _csv(tmp_path, "url,label\nhttps://example.org/a.jpg,psoriasis\n"))
    assert report.missing_images == 1
    with wb.session() as s:
        row = s.scalar(select(ImageRow))
        assert (row.status, row.url, row.sha256) == ("image_missing", "https://example.org/a.jpg", None)


def test_a_big_csv_goes_in_batches_each_committed_and_a_rerun_after_a_crash_completes_it(wb, admin, tmp_path, monkeypatch):
    from curation.ingest import csv_import

    monkeypatch.setattr(csv_import, "CSV_BATCH", 7)
    lines = ["id,url,label,fitzpatrick"] + [f"r{i},https://example.org/{i}.jpg,psoriasis,{i % 6 + 1}" for i in range(40)]
    lines.insert(30, "r3,https://example.org/again.jpg,psoriasis,2")  # repeats an id from an earlier batch
    lines.insert(12, '"quoted, with a comma",https://example.org/q.jpg,"lichen planus",3')
    csv_path = tmp_path / "big.csv"
    csv_path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    seen = []
    calls = {"n": 0}
    real_flush = csv_import.flush_new

    def flush_then_die_in_the_fourth_batch(session, report, rows):
        calls["n"] += 1
        if calls["n"] == 4:
            raise RuntimeError("power cut")
        return real_flush(session, report, rows)

    monkeypatch.setattr(csv_import, "flush_new", flush_then_die_in_the_fourth_batch)
    with pytest.raises(RuntimeError):
        import_csv(wb, admin, csv_path, progress=lambda done, total: seen.append((done, total)))
    assert len(image_rows(wb)) == 21  # three whole batches of 7 rows are kept; the fourth rolled back
    assert seen[0] == (1, 42) and all(total == 42 for _, total in seen)
    monkeypatch.setattr(csv_import, "flush_new", real_flush)
    report = import_csv(wb, admin, csv_path)
    assert report.already_present == 21 and report.missing_images == 20 and len(image_rows(wb)) == 41
    assert [why for _, why in report.duplicates] == ["repeats id 'r3' of line 5: ids are unique per source"]
    with wb.session() as s:
        assert s.scalar(select(ImageRow.diagnosis_key).where(ImageRow.external_id == "quoted, with a comma")) == "lichen planus"


def test_csv_paths_and_ids_cannot_leave_their_folder_and_say_nothing_about_files_outside(wb, admin, tmp_path):
    outside = tmp_path / "outside"
    write(outside / "private_patient.jpg", jpeg_bytes(photo(90)))
    write(outside / "p2.jpg", jpeg_bytes(photo(91)))
    data = tmp_path / "data"
    write(data / "ok.jpg", jpeg_bytes(photo(92)))
    os.symlink(outside / "private_patient.jpg", data / "link.jpg")
    rows = [
        "path,label,mrn",
        "ok.jpg,psoriasis,1",
        "../outside/private_patient.jpg,psoriasis,2",  # exists outside
        "../outside/no_such_file.jpg,psoriasis,3",  # does not exist: the same answer
        f"{outside / 'private_patient.jpg'},psoriasis,4",  # absolute
        "link.jpg,psoriasis,5",  # a link inside that points outside
    ]
    (data / "list.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    report = import_csv(wb, admin, data / "list.csv")
    assert report.imported == 1 and [item for item, _ in report.failed] == [f"list.csv line {n}" for n in (3, 4, 5, 6)]
    assert len({reason for _, reason in report.failed}) == 1 and "outside the folder" in report.failed[0][1]
    assert "private_patient" not in report.failed[0][1]
    with wb.session() as s:
        assert [row.meta for row in s.scalars(select(ImageRow))] == [{"mrn": "1"}]  # no other row, no other metadata

    fitz = tmp_path / "fitz.csv"
    header = "md5hash,fitzpatrick_scale,fitzpatrick_centaur,label,nine_partition_label,three_partition_label,qc,url,url_alphanum"
    fitz.write_text(header + "\n../outside/p2,2,-1,psoriasis,inflammatory,non-neoplastic,,https://example.org/x.jpg,x\n")
    again = import_csv(wb, admin, fitz, images_dir=data)
    assert again.imported == 0 and "outside the folder" in again.failed[0][1]


def test_csv_column_count_and_metadata_size_are_capped(wb, admin, tmp_path):
    from curation.ingest.csv_rows import MAX_CSV_COLUMNS, MAX_METADATA_CHARS

    wide = tmp_path / "wide.csv"
    columns = ["url", "label"] + [f"c{i}" for i in range(MAX_CSV_COLUMNS)]
    wide.write_text(
        ",".join(columns) + "\n" + ",".join(["https://example.org/a.jpg", "psoriasis"] + ["x"] * MAX_CSV_COLUMNS) + "\n"
    )
    with pytest.raises(IngestError, match=f"{len(columns):,} columns; at most {MAX_CSV_COLUMNS}.*Nothing was imported"):
        import_csv(wb, admin, wide)
    assert image_rows(wb) == {}
    big = tmp_path / "big_cell.csv"
    big.write_text(
        f"url,label,notes\nhttps://example.org/a.jpg,psoriasis,{'y' * (MAX_METADATA_CHARS + 1)}\n"
        "https://example.org/b.jpg,psoriasis,short\n"
    )
    report = import_csv(wb, admin, big)
    assert report.missing_images == 1 and report.failed[0][0] == "big_cell.csv line 2"
    assert "characters of metadata" in report.failed[0][1]


def test_a_row_is_read_on_its_own_by_the_layout_its_header_chose(tmp_path):
    """The parser needs no database: the layout is chosen once from the header, then each row is read alone."""
    from curation.ingest.csv_rows import RowRefused, choose_layout, locate_file, parse_row
    from schema import default_taxonomy

    header = ["path", "label", "fitzpatrick", "id", "site"]
    layout = choose_layout(header, tmp_path / "list.csv", images_dir=None, dataset="auto", source="clinic-a")
    assert (layout.path_col, layout.label_col, layout.fitz_col, layout.id_col, layout.source_name) == (
        "path", "label", "fitzpatrick", "id", "clinic-a"
    )  # fmt: skip
    cells = {"path": "a/1.jpg", "label": "Psoriasis", "fitzpatrick": "IV", "id": "p-1", "site": "=cmd|x"}
    row = parse_row(layout, default_taxonomy(), "list.csv line 2", cells)
    locate_file(layout, row)
    assert (row.external_id, row.diagnosis_key, row.fitzpatrick, row.file_path, row.explicit_path) == (
        "p-1", "psoriasis", 4, tmp_path / "a/1.jpg", True
    )  # fmt: skip
    assert row.meta == {"id": "p-1", "site": "=cmd|x"} and [kind for _, kind in row.warnings] == ["formula cell"]
    with pytest.raises(RowRefused, match="Fitzpatrick type must be 1-6"):
        parse_row(layout, default_taxonomy(), "list.csv line 3", {**cells, "fitzpatrick": "9"})
    escaping = parse_row(layout, default_taxonomy(), "list.csv line 4", {**cells, "path": "../../etc/passwd"})
    with pytest.raises(RowRefused, match="keep images inside"):
        locate_file(layout, escaping)
