"""Splits that hold up: stratified by label and deterministic, with near-duplicate pictures and the images of one
lesion (or patient) kept in one split, and a grouping column no record has refused with the columns there are."""

import hashlib
import io
import json
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image as PILImage
from sqlalchemy import select

from curation.errors import ExportError
from curation.export.dataset import export_dataset
from curation.export.neardup import hamming, near_duplicate_groups
from curation.export.records import ExportFilter, export_choices
from curation.export.splits import assign_splits, join_groups
from curation.ingest.clean import dhash
from curation.ingest.csv_import import import_csv
from curation.ingest.folder import import_folder
from curation.labelling.annotate import review_annotation, submit_annotation
from curation.store.auth import add_user
from curation.store.models import Image
from tests.helpers import jpeg_bytes, write
from tests.test_datasets import ham10000, records, verify_all
from tests.test_export_formats import shapes

pytestmark = pytest.mark.database  # run again on PostgreSQL by `make test-postgres`


def test_split_is_stratified_by_label_and_deterministic():
    items = [(hashlib.sha256(f"{label}{i}".encode()).hexdigest(), label) for label in "abc" for i in range(40)]
    items = [(d, label, d) for d, label in items]
    splits = assign_splits(items, seed=0, fractions=(0.8, 0.1, 0.1))
    for label in "abc":
        counts = Counter(splits[d] for d, l, _ in items if l == label)
        assert counts == {"train": 32, "val": 4, "test": 4}
    assert assign_splits(list(reversed(items)), 0, (0.8, 0.1, 0.1)) == splits
    assert assign_splits(items, 1, (0.8, 0.1, 0.1)) != splits


def test_join_groups_joins_items_sharing_a_key_transitively_and_leaves_the_rest_alone():
    groups = {"a": "a", "b": "b", "c": "c", "d": "c", "e": "e"}  # c and d are near-duplicates
    keys = {"a": ["lesion=1"], "b": ["lesion=2", "patient=9"], "c": ["patient=9"], "e": []}
    assert join_groups(groups, keys) == {"a": "a", "b": "b", "c": "b", "d": "b", "e": "e"}
    assert join_groups(groups, {}) == groups


def test_an_export_grouped_by_lesion_puts_every_lesion_in_one_split(wb, admin, annotator, reviewer, tmp_path):
    metadata, lesion_of = ham10000(tmp_path, n_lesions=40)
    report = import_csv(wb, admin, metadata, images_dir=tmp_path / "images")
    verify_all(wb, annotator, reviewer, report.image_ids)

    def splits_per_lesion(folder: Path) -> dict[str, set[str]]:
        out: dict[str, set[str]] = {}
        by_sha = {}
        with wb.session() as s:
            by_sha = {i.sha256: i.meta["lesion_id"] for i in s.scalars(select(Image))}
        for r in records(folder):
            out.setdefault(by_sha[r["sha256"]], set()).add(r["split"])
        return out

    result = export_dataset(wb, admin, tmp_path / "by-lesion", selection=ExportFilter(group_by=("lesion_id",)))
    assert all(len(s) == 1 for s in splits_per_lesion(tmp_path / "by-lesion").values())
    assert result.by_split["val"] and result.by_split["test"]
    assert result.grouping.split_groups == 40 and result.grouping.by_column == {"lesion_id": 40}
    manifest = json.loads((tmp_path / "by-lesion" / "manifest.json").read_text())
    assert manifest["split"]["group_by"] == ["lesion_id"] and sum(manifest["groups"]["by_split"].values()) == 40
    card = (tmp_path / "by-lesion" / "README.md").read_text()
    assert "Images sharing lesion_id are kept in one split too: 40 distinct lesion_id" in card
    assert "Tschandl" in card and "CC BY-NC 4.0" in card and "license: cc-by-nc-4.0" in card  # the dataset's terms
    assert manifest["licenses"]["datasets"]["ham10000"]["citation"].startswith("Tschandl")
    one = records(tmp_path / "by-lesion")[0]
    assert one["group_keys"] == {"lesion_id": one["group_keys"]["lesion_id"]} and one["split_group"]

    # auto (the default) finds lesion_id; without grouping the same data lets lesions straddle splits
    auto = export_dataset(wb, admin, tmp_path / "auto")
    assert auto.grouping.columns == ("lesion_id",)
    export_dataset(wb, admin, tmp_path / "loose", selection=ExportFilter(group_by=()))
    assert any(len(s) > 1 for s in splits_per_lesion(tmp_path / "loose").values())


def test_group_by_a_column_no_record_has_is_refused_with_the_columns_there_are(wb, admin, annotator, reviewer, tmp_path):
    metadata, _ = ham10000(tmp_path, n_lesions=3)
    verify_all(wb, annotator, reviewer, import_csv(wb, admin, metadata, images_dir=tmp_path / "images").image_ids)
    with pytest.raises(ExportError, match="'patient_id'.*columns found: .*lesion_id"):
        export_dataset(wb, admin, tmp_path / "out", selection=ExportFilter(group_by=("patient_id",)))
    assert not (tmp_path / "out").exists()
    choices = export_choices(wb)
    assert "ham10000" in choices.sources and choices.default_group_by == ["lesion_id"]


def test_near_duplicate_groups_by_hamming_distance():
    hashes = {"a": "0000000000000000", "b": "0000000000000003", "c": "ffffffffffffffff", "d": "00000000000000ff", "e": None}
    groups = near_duplicate_groups(hashes, max_distance=2)
    assert groups["a"] == groups["b"] == "a" and groups["c"] == "c" and groups["d"] == "d" and groups["e"] == "e"
    assert near_duplicate_groups(hashes, max_distance=7)["d"] == "a"  # 6 bits from b, so with a: groups are transitive
    assert hamming("00ff", "0000") == 8


def test_dhash_sees_a_re_encoded_copy_as_near_and_a_different_picture_as_far():
    picture = shapes(1)
    copy = PILImage.open(io.BytesIO(jpeg_bytes(picture.resize((300, 225)), quality=60)))
    other = shapes(2)
    assert hamming(dhash(picture), dhash(copy)) <= 6
    assert hamming(dhash(picture), dhash(other)) > 12


def test_near_duplicates_land_in_the_same_split(wb, admin, tmp_path):
    reviewer = add_user(wb, admin, "rev", "reviewer", "reviewer-pw-1")[0]
    annotator = add_user(wb, admin, "ann", "annotator", "annotator-pw-1")[0]
    for i in range(30):
        base = shapes(100 + i)
        write(tmp_path / "imgs" / f"{i}.jpg", jpeg_bytes(base))
        if i < 10:  # a near-duplicate: the same picture slightly smaller and re-encoded at a lower quality
            write(tmp_path / "imgs" / f"{i}-copy.jpg", jpeg_bytes(base.resize((300, 225)), quality=60))
    report = import_folder(wb, admin, tmp_path / "imgs")
    assert report.imported == 40
    for image_id in report.image_ids:
        aid = submit_annotation(wb, annotator, image_id, {"color": "red"}, diagnosis="psoriasis", diagnosis_status="confirmed")
        review_annotation(wb, reviewer, aid, "verified")
    result = export_dataset(wb, admin, tmp_path / "out")
    assert result.duplicate_groups == 10
    records = [json.loads(line) for line in (tmp_path / "out" / "records.jsonl").read_text().splitlines()]
    by_group: dict[str, set[str]] = {}
    for r in records:
        by_group.setdefault(r["duplicate_group"], set()).add(r["split"])
    assert sum(1 for r in records if sum(x["duplicate_group"] == r["duplicate_group"] for x in records) == 2) == 20
    assert all(len(splits) == 1 for splits in by_group.values())
