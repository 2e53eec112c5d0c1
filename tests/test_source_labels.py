"""A public dataset to a training export without annotating every image: an admin accepts the source's own labels in
bulk, chosen by their provenance; the export marks them as source labels with that provenance; undo takes them back."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select

from curation.errors import ExportError, PermissionDenied, SkinflowError
from curation.export.dataset import export_dataset
from curation.export.records import ExportFilter
from curation.ingest.csv_import import import_csv
from curation.labelling.source_labels import verify_source_labels
from curation.store.models import AuditEvent, Image
from tests.helpers import jpeg_bytes, photo, write
from tests.test_datasets import HAM_HEADER, records, verify_all, write_csv

pytestmark = pytest.mark.database  # run again on PostgreSQL by `make test-postgres`

DX_TYPES = ["histo", "follow_up", "consensus", "confocal"]  # HAM10000's dx_type codes
CODES = ["mel", "nv", "bcc", "bkl"]  # three labels and a code naming a group (bkl -> benign epidermal)


@pytest.fixture
def ham(wb, admin, tmp_path):
    """A HAM10000-format workbench: 16 images, every dx_type, imported with nothing annotated."""
    rows = []
    for i in range(16):
        image_id = f"ISIC_{i:07d}"
        write(tmp_path / "images" / f"{image_id}.jpg", jpeg_bytes(photo(700 + i)))
        rows.append([f"HAM_{i:07d}", image_id, CODES[i % 4], DX_TYPES[i // 4], "50.0", "female", "back", "rosendahl"])
    import_csv(wb, admin, write_csv(tmp_path / "HAM10000_metadata.csv", HAM_HEADER, rows), images_dir=tmp_path / "images")
    return wb


def test_accepted_source_labels_export_with_their_provenance_and_no_annotation(ham, admin, tmp_path):
    wb = ham
    with pytest.raises(ExportError, match="nothing to export.*skinflow verify"):
        export_dataset(wb, admin, tmp_path / "none", formats=("grpo",))
    result = verify_source_labels(wb, admin, "ham10000", ["dx_type=histo|consensus"])
    assert (result.matched, result.changed, result.without_label) == (8, 8, 0)
    assert verify_source_labels(wb, admin, "ham10000", ["dx_type=histo|consensus"]).changed == 0  # already accepted
    export = export_dataset(
        wb, admin, tmp_path / "v1", selection=ExportFilter(label_kinds="source"), formats=("grpo", "sharegpt")
    )
    rows = records(export.path)
    assert len(rows) == 8 and {r["label_kind"] for r in rows} == {"source"}
    assert {r["label_provenance"] for r in rows} == {"histo", "consensus"}  # follow_up and confocal were not accepted
    assert all(r["source"] == "ham10000" and r["source_id"].startswith("ISIC_") for r in rows)  # traceable
    bkl = [r for r in rows if r["source_label"] == "bkl"]
    assert bkl and all(r["diagnosis_key"] is None and r["group9"] == "benign epidermal" for r in bkl)
    assert all(r["reviewer"] == "admin" and r["diagnosis_status"] == "source" for r in rows)
    assert (export.path / "grpo" / "stage1.jsonl").read_text() == ""  # no curated caption to train captions on
    stage2 = (export.path / "grpo" / "stage2.jsonl").read_text().splitlines()
    assert len(stage2) == sum(1 for r in rows if r["diagnosis_key"])
    card = (export.path / "README.md").read_text()
    assert "8 records carry their source's own label" in card
    assert "| source | histo | 4 |" in card and "| source | consensus | 4 |" in card


def test_both_prefers_a_verified_annotation_and_undo_takes_the_source_labels_back(ham, admin, annotator, reviewer, tmp_path):
    wb = ham
    verify_source_labels(wb, admin, "ham10000", ["dx_type=histo"])
    with wb.session() as s:
        histo = s.scalars(select(Image.id).where(Image.source_verified_at.is_not(None)).order_by(Image.id)).all()
    verify_all(wb, annotator, reviewer, [histo[0]], diagnosis="melanoma")
    both = records(export_dataset(wb, admin, tmp_path / "both", selection=ExportFilter(label_kinds="both")).path)
    kinds = {r["id"]: r["label_kind"] for r in both}
    assert kinds == {histo[0]: "annotation", **{i: "source" for i in histo[1:]}}
    undone = verify_source_labels(wb, admin, "ham10000", ["dx_type=histo"], undo=True)
    assert undone.changed == 4
    with pytest.raises(ExportError, match="nothing to export"):
        export_dataset(wb, admin, tmp_path / "after", selection=ExportFilter(label_kinds="source"))
    with wb.session() as s:
        events = [
            (e.action, e.payload["changed"]) for e in s.scalars(select(AuditEvent).where(AuditEvent.action.like("%source")))
        ]
    assert events == [("images.verify_source", 4), ("images.unverify_source", 4)]


def test_bulk_acceptance_is_for_admins_and_refuses_what_it_cannot_match(ham, admin, reviewer):
    with pytest.raises(PermissionDenied):
        verify_source_labels(ham, reviewer, "ham10000", ["dx_type=histo"])
    with pytest.raises(SkinflowError, match="no column dxtype; its columns are: .*dx_type"):
        verify_source_labels(ham, admin, "ham10000", ["dxtype=histo"])
    with pytest.raises(SkinflowError, match="the sources here are: ham10000"):
        verify_source_labels(ham, admin, "isic", [])
    with pytest.raises(SkinflowError, match="COLUMN=VALUE"):
        verify_source_labels(ham, admin, "ham10000", ["dx_type"])
    with ham.session() as s:
        assert s.scalar(select(Image.id).where(Image.source_verified_at.is_not(None))) is None  # nothing changed


def test_the_cli_accepts_source_labels_and_exports_them(tmp_path):
    from tests.test_cli import run

    home = tmp_path / "wb"
    rows = []
    for i in range(6):
        write(tmp_path / "images" / f"ISIC_{i:07d}.jpg", jpeg_bytes(photo(800 + i)))
        rows.append([f"HAM_{i:07d}", f"ISIC_{i:07d}", "nv", DX_TYPES[i % 2], "40.0", "male", "back", "vidir_modern"])
    metadata = write_csv(tmp_path / "HAM10000_metadata.csv", HAM_HEADER, rows)
    run(home, "import", str(metadata), "--images-dir", str(tmp_path / "images"))
    verified = run(home, "verify", "--source", "ham10000", "--where", "dx_type=histo")
    assert "3 rows match, 3 source labels accepted" in verified.stdout
    run(home, "export", "--out", str(tmp_path / "v1"), "--labels", "source")
    manifest = json.loads((tmp_path / "v1" / "manifest.json").read_text())
    assert manifest["filters"]["label_kinds"] == "source" and len(records(tmp_path / "v1")) == 3


def test_the_admin_page_accepts_and_undoes_source_labels_and_exports_them(ham, admin, tmp_path, monkeypatch):
    import streamlit as st

    from tests.test_app_pages import page

    # the page opens its own workbench: this one's home and database (PostgreSQL under make test-postgres)
    monkeypatch.setenv("SKINFLOW_HOME", str(ham.settings.home))
    monkeypatch.setenv("SKINFLOW_DATABASE_URL", ham.engine.url.render_as_string(hide_password=False))
    st.cache_resource.clear()  # the app caches its workbench: never another test's
    at = page(ham, "admin", "admin")
    where = [t for t in at.text_input if t.label.startswith("Only rows where")][0]
    where.input("dx_type=follow_up")
    [b for b in at.button if b.label == "Accept these labels"][0].click().run()
    assert not at.exception and "4 rows match, 4 source labels accepted now" in at.success[0].value
    [r for r in at.radio if r.label == "Labels"][0].set_value("source")
    [t for t in at.text_input if t.label.startswith("Export folder")][0].input(str(tmp_path / "ui-export"))
    [b for b in at.button if b.label == "Export"][0].click().run()
    assert not at.exception and {r["label_provenance"] for r in records(tmp_path / "ui-export")} == {"follow_up"}
    [b for b in at.button if b.label == "Undo: stop accepting them"][0].click().run()
    assert "4 source labels no longer accepted now" in at.success[0].value
    with ham.session() as s:
        assert s.scalar(select(Image.id).where(Image.source_verified_at.is_not(None))) is None


def test_an_export_leads_back_to_the_original_images_with_the_metadata_columns_asked_for(ham, admin, tmp_path):
    verify_source_labels(ham, admin, "ham10000", [])
    selection = ExportFilter(label_kinds="source", metadata_columns=("age", "sex", "lesion_id"))
    export = export_dataset(ham, admin, tmp_path / "v1", selection=selection, formats=("csv",))
    rows = records(export.path)
    assert len(rows) == 16 and all(r["source_id"] == f"ISIC_{int(r['source_id'][5:]):07d}" for r in rows)
    assert all(set(r["metadata"]) == {"age", "sex", "lesion_id"} and r["metadata"]["sex"] == "female" for r in rows)
    assert all(r["metadata"]["lesion_id"].startswith("p-") for r in rows)  # a patient's lesion: a pseudonym
    assert not any("HAM_" in line for line in (export.path / "records.csv").read_text().splitlines())
    assert "metadata.age" in (export.path / "records.csv").read_text().splitlines()[0]
    card = (export.path / "README.md").read_text()
    assert "holds the imported columns age, sex, lesion_id (patient and lesion ids among them as pseudonyms)" in card
    raw = ExportFilter(label_kinds="source", metadata_columns=("lesion_id",), raw_group_keys=True)
    assert records(export_dataset(ham, admin, tmp_path / "raw", selection=raw).path)[0]["metadata"]["lesion_id"].startswith(
        "HAM_"
    )
    with pytest.raises(ExportError, match="no exported record has the metadata column.*skin_colour.*localization"):
        export_dataset(
            ham, admin, tmp_path / "v2", selection=ExportFilter(label_kinds="source", metadata_columns=("skin_colour",))
        )
