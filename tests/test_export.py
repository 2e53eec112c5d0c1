import hashlib
import json

import pandas as pd
import pytest
from sqlalchemy import select

from curation.errors import ExportError
from curation.export import canonical as canonical_module
from curation.export.dataset import export_dataset
from curation.ops.demo import build_demo
from curation.store.models import Export
from schema import Caption, parse

pytestmark = pytest.mark.database  # run again on PostgreSQL by `make test-postgres`


@pytest.fixture
def demo_wb(wb):
    build_demo(wb, None, n=60, seed=0, verified_fraction=0.6, annotated_fraction=0.2)
    from curation.store.auth import get_actor

    return wb, get_actor(wb, "admin")


def _files(root):
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_state_exported_twice_is_byte_identical(demo_wb, tmp_path):
    wb, admin = demo_wb
    export_dataset(wb, admin, tmp_path / "v1")
    export_dataset(wb, admin, tmp_path / "v2")
    assert _files(tmp_path / "v1") == _files(tmp_path / "v2")


def test_records_manifest_and_parquet_agree(demo_wb, tmp_path):
    wb, admin = demo_wb
    result = export_dataset(wb, admin, tmp_path / "v1")
    out = tmp_path / "v1"
    records = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
    manifest = json.loads((out / "manifest.json").read_text())
    assert result.n_records == len(records) == manifest["counts"]["records"]
    assert all(r["verified"] for r in records)  # verified only by default
    for name, digest in manifest["files"].items():
        assert hashlib.sha256((out / name).read_bytes()).hexdigest() == digest
    assert set(manifest["files"]) == {r["image"] for r in records} | {
        "records.jsonl",
        "records.parquet",
        "README.md",
        "fitzpatrick.png",
    }
    assert manifest["synthetic"] is True and {r["source"] for r in records} == {"synthetic"}
    assert manifest["schema_version"] == "1" and manifest["taxonomy"]["name"] == "fitzpatrick17k"
    for r in records:
        assert parse(r["caption_text"]) == Caption.model_validate(r["caption"])
        assert r["group3"] in ("benign", "malignant", "non-neoplastic") and r["annotators"] == ["demo-annotator"]
        assert r["reviewer"] == "demo-reviewer"
    frame = pd.read_parquet(out / "records.parquet")
    assert len(frame) == len(records) and list(frame["id"]) == [r["id"] for r in records]
    assert list(frame["color"].iloc[0]) == records[0]["caption"]["color"]
    with wb.session() as s:
        row = s.scalar(select(Export))
        assert row.n_records == len(records) and row.manifest_sha256 == result.manifest_sha256


def test_include_unverified_adds_annotated_records(demo_wb, tmp_path):
    wb, admin = demo_wb
    verified = export_dataset(wb, admin, tmp_path / "a").n_records
    everything = export_dataset(wb, admin, tmp_path / "b", include_unverified=True)
    records = [json.loads(line) for line in (tmp_path / "b" / "records.jsonl").read_text().splitlines()]
    assert everything.n_records > verified
    assert sum(not r["verified"] for r in records) == everything.n_records - verified


def test_existing_folder_is_refused_and_nothing_to_export_is_clear(demo_wb, wb, tmp_path):
    wb, admin = demo_wb
    export_dataset(wb, admin, tmp_path / "v1")
    before = _files(tmp_path / "v1")
    with pytest.raises(ExportError, match="exists already"):
        export_dataset(wb, admin, tmp_path / "v1")
    assert _files(tmp_path / "v1") == before
    export_dataset(wb, admin, tmp_path / "v1", overwrite=True)
    assert _files(tmp_path / "v1") == before


def test_no_verified_records_is_a_clear_error(wb, admin, tmp_path):
    with pytest.raises(ExportError, match="no verified records"):
        export_dataset(wb, admin, tmp_path / "v1")


def test_an_interrupted_export_leaves_nothing_half_written(demo_wb, tmp_path, monkeypatch):
    wb, admin = demo_wb
    export_dataset(wb, admin, tmp_path / "v1")
    before = _files(tmp_path / "v1")

    def crash(*args, **kwargs):
        raise KeyboardInterrupt  # as if the user pressed Ctrl-C while the parquet file was written

    monkeypatch.setattr(canonical_module.pq, "write_table", crash)
    with pytest.raises(KeyboardInterrupt):
        export_dataset(wb, admin, tmp_path / "v2")
    with pytest.raises(KeyboardInterrupt):
        export_dataset(wb, admin, tmp_path / "v1", overwrite=True)
    assert not (tmp_path / "v2").exists()
    assert _files(tmp_path / "v1") == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v1", "wb"]  # no temp folders left
