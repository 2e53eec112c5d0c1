"""A source row is (source, id): two sources that both number their images from 1 lose nothing to each other,
in either import order; a picture byte-identical in two sources is stored once and linked to both rows; an id
repeated inside one source is reported with the line that had it first."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import func, select

from curation.errors import IngestError
from curation.ingest.csv_import import import_csv
from curation.store.models import Image, ImageSource
from tests.helpers import jpeg_bytes, photo, png_bytes, write
from tests.test_datasets import write_csv

pytestmark = pytest.mark.database  # run again on PostgreSQL by `make test-postgres`

DDI_HEADER = ["", "ddi_id", "ddi_file", "skin_tone", "malignant", "disease"]  # ddi_metadata.csv as published


def ddi(root: Path, n: int = 5) -> Path:
    rows = []
    for number in range(1, n + 1):
        name = f"{number:06d}.png"
        write(root / "ddi" / name, png_bytes(photo(300 + number)))
        rows.append([str(number - 1), str(number), name, "34", "False", "dermatofibroma"])
    return write_csv(root / "ddi_metadata.csv", DDI_HEADER, rows)


def clinic(root: Path, name: str, ids: list[str], seed: int, same_as_ddi: dict[str, int] | None = None) -> Path:
    """A clinic's generic CSV numbering its images 1, 2, 3 ...; `same_as_ddi` puts a DDI picture's bytes at an id."""
    rows = []
    for index, image_id in enumerate(ids):
        path = root / name / f"img{image_id}.jpg"
        if same_as_ddi and image_id in same_as_ddi:
            path = root / name / f"img{image_id}.png"
            write(path, (root / "ddi" / f"{same_as_ddi[image_id]:06d}.png").read_bytes())
        else:
            write(path, jpeg_bytes(photo(seed + index)))
        rows.append([image_id, f"{name}/{path.name}", "psoriasis", f"clinic note {image_id}"])
    return write_csv(root / f"{name}.csv", ["id", "path", "label", "note"], rows)


def _rows_of(path: Path) -> tuple[list[str], list[list[str]]]:
    import csv

    header, *rows = list(csv.reader(path.open(encoding="utf-8")))
    return header, rows


def counts(wb) -> tuple[int, int]:
    with wb.session() as s:
        return s.scalar(select(func.count()).select_from(Image)), s.scalar(select(func.count()).select_from(ImageSource))


@pytest.mark.parametrize("ddi_first", [True, False], ids=["ddi-then-clinic", "clinic-then-ddi"])
def test_two_sources_with_the_same_ids_lose_nothing_in_either_order(wb, admin, tmp_path, ddi_first):
    ddi_csv, clinic_csv = ddi(tmp_path), clinic(tmp_path, "clinic", ["1", "2", "3"], seed=900)
    order = [(ddi_csv, {"images_dir": tmp_path / "ddi"}), (clinic_csv, {})]
    reports = [import_csv(wb, admin, path, **options) for path, options in (order if ddi_first else order[::-1])]
    assert sorted(r.imported for r in reports) == [3, 5] and all(r.already_present == 0 for r in reports)
    assert counts(wb) == (8, 8)
    with wb.session() as s:
        by_source = {(row.source, row.external_id): row.image.source_label for row in s.scalars(select(ImageSource))}
    assert by_source[("ddi", "1")] == "dermatofibroma" and by_source[("csv", "1")] == "psoriasis"
    again = [import_csv(wb, admin, path, **options) for path, options in order]  # the same rows: present already
    assert [r.already_present for r in again] == [5, 3] and sum(r.imported for r in again) == 0
    assert counts(wb) == (8, 8)


def test_a_picture_in_two_sources_is_stored_once_and_both_rows_are_kept(wb, admin, tmp_path):
    import_csv(wb, admin, ddi(tmp_path), images_dir=tmp_path / "ddi")
    report = import_csv(wb, admin, clinic(tmp_path, "clinic", ["1", "2", "3"], seed=900, same_as_ddi={"2": 4}))
    assert report.imported == 2 and len(report.linked) == 1 and not report.duplicates and report.already_present == 0
    assert "clinic.csv line 3" in report.linked[0][0] and "image #" in report.linked[0][1]
    assert counts(wb) == (7, 8)  # 7 pictures, 8 source rows
    with wb.session() as s:
        ddi_image = s.scalar(select(ImageSource).where(ImageSource.source == "ddi", ImageSource.external_id == "4")).image
        rows = s.scalars(select(ImageSource).where(ImageSource.image_id == ddi_image.id)).all()
        assert {(r.source, r.external_id, r.source_label) for r in rows} == {
            ("ddi", "4", "dermatofibroma"),
            ("csv", "2", "psoriasis"),  # the clinic's row, with its own label and metadata
        }
        assert next(r for r in rows if r.source == "csv").meta["note"] == "clinic note 2"
    assert import_csv(wb, admin, tmp_path / "clinic.csv").already_present == 3  # the linked row is found again
    assert counts(wb) == (7, 8)


def test_an_id_repeated_in_one_source_is_reported_with_its_first_line_and_a_named_source_is_its_own(wb, admin, tmp_path):
    first = clinic(tmp_path, "clinic", ["1", "2", "1"], seed=900)
    report = import_csv(wb, admin, first)
    assert report.imported == 2 and report.duplicates == [
        ("clinic.csv line 4", "repeats id '1' of line 2: ids are unique per source")
    ]
    other = clinic(tmp_path, "clinic-b", ["1", "2"], seed=950)  # another clinic's ids 1 and 2, other pictures
    clash = import_csv(wb, admin, other)  # read as the same source (csv): its ids are taken, by other pictures
    assert clash.imported == 0 and clash.already_present == 0 and len(clash.failed) == 2
    assert "own --source NAME" in clash.failed[0][1]
    moved = tmp_path / "moved"
    moved.mkdir()
    (tmp_path / "clinic").rename(moved / "clinic")  # the first clinic's folder moved: same pictures, other paths
    assert import_csv(wb, admin, write_csv(moved / "clinic.csv", *_rows_of(first))).already_present == 2
    named = import_csv(wb, admin, other, source="clinic-b")
    assert named.imported == 2 and named.already_present == 0
    with pytest.raises(IngestError, match="source name"):
        import_csv(wb, admin, other, source="ddi")  # a dataset's ids are its own
    with pytest.raises(IngestError, match="leave out --source"):
        import_csv(wb, admin, ddi(tmp_path), images_dir=tmp_path / "ddi", source="clinic-b")
    assert counts(wb) == (4, 4)
