"""PAD-UFES-20 numbers lesions per patient (in the published file 250 lesion ids belong to two patients, 226 of them
with different diagnoses): a lesion is (patient, lesion id). Another patient's lesion is never "the same lesion" on
the Annotate page, the export keeps real lesions together and counts them; another source's patient is not this one."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from curation.export.dataset import export_dataset
from curation.export.records import ExportFilter
from curation.ingest.csv_import import import_csv
from curation.labelling.source_labels import verify_source_labels
from curation.labelling.views import related_images
from curation.store.models import Image
from tests.helpers import photo, png_bytes, write
from tests.test_datasets import records, write_csv

pytestmark = pytest.mark.database  # run again on PostgreSQL by `make test-postgres`

# metadata.csv as published with PAD-UFES-20 (Pacheco et al. 2020), every column
PAD_HEADER = [
    "patient_id", "lesion_id", "smoke", "drink", "background_father", "background_mother", "age", "pesticide", "gender",
    "skin_cancer_history", "cancer_history", "has_piped_water", "has_sewage_system", "fitspatrick", "region",
    "diameter_1", "diameter_2", "diagnostic", "itch", "grew", "hurt", "changed", "bleed", "elevation", "img_id", "biopsed",
]  # fmt: skip


def pad_row(patient: str, lesion: str, code: str, image: str) -> list[str]:
    values = dict.fromkeys(PAD_HEADER, "")
    values.update(patient_id=patient, lesion_id=lesion, age="60", fitspatrick="2.0", region="FACE", diagnostic=code)
    values.update(img_id=image, biopsed="True" if code in ("BCC", "MEL", "SCC") else "False")
    return [values[c] for c in PAD_HEADER]


def test_a_lesion_id_two_patients_share_is_two_lesions(wb, admin, annotator, tmp_path):
    rows = [
        pad_row("PAT_1", "100", "BCC", "PAT_1_100_1.png"),
        pad_row("PAT_1", "100", "BCC", "PAT_1_100_2.png"),  # another view of the same lesion
        pad_row("PAT_2", "100", "NEV", "PAT_2_100_3.png"),  # lesion 100 of another patient, another diagnosis
    ]
    for index, row in enumerate(rows):
        write(tmp_path / "imgs_part_1" / row[PAD_HEADER.index("img_id")], png_bytes(photo(1500 + index)))
    report = import_csv(wb, admin, write_csv(tmp_path / "metadata.csv", PAD_HEADER, rows), images_dir=tmp_path)
    assert report.dataset == "pad-ufes-20" and report.imported == 3
    with wb.session() as s:
        ids = {i.external_id: i.id for i in s.scalars(select(Image))}
        lesions = {i.external_id: (i.meta["lesion_id"], i.meta["source_lesion_id"]) for i in s.scalars(select(Image))}
    assert lesions["PAT_2_100_3.png"] == ("PAT_2/100", "100") and lesions["PAT_1_100_1.png"] == ("PAT_1/100", "100")
    same = [(r.id, r.column) for r in related_images(wb, annotator, ids["PAT_1_100_1.png"])]
    assert same == [(ids["PAT_1_100_2.png"], "lesion_id")]  # not PAT_2's lesion 100
    assert [r.column for r in related_images(wb, annotator, ids["PAT_2_100_3.png"])] == []
    verify_source_labels(wb, admin, "pad-ufes-20")
    export = export_dataset(wb, admin, tmp_path / "v1", selection=ExportFilter(label_kinds="source"))
    assert export.grouping.by_column["lesion_id"] == 2  # two real lesions, not one
    out = records(export.path)
    assert {r["label_provenance"] for r in out} == {"histopathology", "clinical consensus"}
    by_image = {r["source_id"]: r["split_group"] for r in out}
    assert by_image["PAT_1_100_1.png"] == by_image["PAT_1_100_2.png"]


def test_the_same_patient_id_in_two_sources_is_not_the_same_patient(wb, admin, annotator, tmp_path):
    pad = [pad_row("7", "1", "NEV", "a.png")]
    write(tmp_path / "pad" / "a.png", png_bytes(photo(1600)))
    import_csv(wb, admin, write_csv(tmp_path / "pad.csv", PAD_HEADER, pad), images_dir=tmp_path / "pad")
    write(tmp_path / "clinic" / "b.png", png_bytes(photo(1601)))
    import_csv(
        wb,
        admin,
        write_csv(tmp_path / "clinic.csv", ["id", "path", "label", "patient_id"], [["1", "clinic/b.png", "psoriasis", "7"]]),
    )
    with wb.session() as s:
        first = s.scalar(select(Image.id).where(Image.source == "pad-ufes-20"))
    assert related_images(wb, annotator, first) == []
