"""Public dermatology datasets (import recipes with label crosswalks) and lesion- and patient-aware splits."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from sqlalchemy import select

from curation.errors import IngestError
from curation.export.dataset import export_dataset
from curation.export.records import ExportFilter
from curation.ingest import import_path
from curation.ingest.csv_import import import_csv
from curation.ingest.datasets import dataset_recipes, detect_recipe
from curation.labelling.annotate import review_annotation, submit_annotation
from curation.labelling.views import image_detail, related_images
from curation.store.models import Image
from schema.taxonomy import default_taxonomy
from tests.helpers import jpeg_bytes, photo, png_bytes, write

pytestmark = pytest.mark.database  # run again on PostgreSQL by `make test-postgres`

HAM_HEADER = ["lesion_id", "image_id", "dx", "dx_type", "age", "sex", "localization", "dataset"]
HAM_CODES = ["mel", "nv", "bcc", "df", "bkl", "akiec", "vasc"]


def write_csv(path: Path, header: list[str], rows: list[list]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def ham10000(root: Path, n_lesions: int = 28, seed: int = 0) -> tuple[Path, dict[str, str]]:
    """A HAM10000-format metadata CSV and its JPEGs, spread over two part folders as the real download is:
    lesions of 1-4 images, every code. Returns (csv, {image_id: lesion_id})."""
    rows, lesion_of = [], {}
    for lesion in range(n_lesions):
        code = HAM_CODES[lesion % len(HAM_CODES)]
        for view in range(lesion % 4 + 1):
            image_id = f"ISIC_{seed:02d}{lesion:03d}{view}"
            part = "HAM10000_images_part_1" if lesion % 2 else "HAM10000_images_part_2"
            write(root / "images" / part / f"{image_id}.jpg", jpeg_bytes(photo(seed * 10_000 + lesion * 10 + view)))
            rows.append([f"HAM_{lesion:07d}", image_id, code, "histo", "45.0", "male", "back", "vidir_modern"])
            lesion_of[image_id] = f"HAM_{lesion:07d}"
    return write_csv(root / "HAM10000_metadata.csv", HAM_HEADER, rows), lesion_of


def verify_all(wb, annotator, reviewer, image_ids, diagnosis=None) -> None:
    with wb.session() as s:
        labels = {i.id: i.diagnosis_key or i.source_label for i in s.scalars(select(Image).where(Image.id.in_(image_ids)))}
    for image_id in image_ids:
        aid = submit_annotation(
            wb, annotator, image_id, {"color": "brown"}, diagnosis=diagnosis or labels[image_id], diagnosis_status="confirmed"
        )
        review_annotation(wb, reviewer, aid, "verified")


def records(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "records.jsonl").read_text(encoding="utf-8").splitlines()]


# -- the shipped crosswalks ------------------------------------------------------------------------------------------


def test_every_shipped_crosswalk_names_real_taxonomy_labels_and_groups():
    taxonomy = default_taxonomy()
    recipes = dataset_recipes()
    assert set(recipes) == {"ham10000", "isic", "pad-ufes-20", "ddi"}
    for recipe in recipes.values():
        assert recipe.license and recipe.citation and recipe.url.startswith("https://"), recipe.name
        for code, mapping in recipe.crosswalk.items():
            if mapping.key:
                assert mapping.key in taxonomy.labels, (recipe.name, code, mapping.key)
            if mapping.group9:
                assert mapping.group9 in taxonomy.groups9(), (recipe.name, code, mapping.group9)
    assert set(HAM_CODES) <= set(recipes["ham10000"].crosswalk)
    assert {"ack", "bcc", "mel", "nev", "scc", "sek"} <= set(recipes["pad-ufes-20"].crosswalk)
    ham = recipes["ham10000"]
    assert ham.map_label("MEL", taxonomy).key == "melanoma"  # codes match whatever their case
    bkl = ham.map_label("bkl", taxonomy)
    assert (bkl.key, bkl.group9, bkl.group3) == (None, "benign epidermal", "benign") and "seborrheic" in bkl.note


def test_recipes_are_detected_from_their_headers_and_a_generic_csv_is_not():
    assert detect_recipe(HAM_HEADER).name == "ham10000"
    isic_2020 = ["image_name", "patient_id", "sex", "age_approx", "anatom_site_general_challenge", "diagnosis"]
    assert detect_recipe([*isic_2020, "benign_malignant", "target"]).name == "isic"
    pad = ["patient_id", "lesion_id", "smoke", "fitspatrick", "region", "diagnostic", "img_id", "biopsed"]
    assert detect_recipe(pad).name == "pad-ufes-20"
    assert detect_recipe(["", "ddi_id", "ddi_file", "skin_tone", "malignant", "disease"]).name == "ddi"
    assert detect_recipe(["path", "label", "fitzpatrick", "lesion_id"]) is None


# -- imports --------------------------------------------------------------------------------------------------------


def test_a_ham10000_metadata_csv_imports_with_taxonomy_keys_groups_and_lesions(wb, admin, tmp_path):
    metadata, lesion_of = ham10000(tmp_path)
    report = import_path(wb, admin, metadata, images_dir=tmp_path / "images")  # detected from the header
    assert report.dataset == "ham10000" and report.imported == len(lesion_of) and not report.failed
    with wb.session() as s:
        images = {i.external_id: i for i in s.scalars(select(Image))}
    expected_keys = {"mel": "melanoma", "nv": "nevocytic nevus", "bcc": "basal cell carcinoma", "df": "dermatofibroma"}
    expected_groups = {"bkl": "benign epidermal", "akiec": "malignant epidermal", "vasc": "benign dermal"}
    seen = set()
    for image_id, image in images.items():
        code = image.source_label
        seen.add(code)
        assert image.source == "ham10000" and image.status == "pending" and image.meta["lesion_id"] == lesion_of[image_id]
        assert image.meta["dx_type"] == "histo" and image.meta["localization"] == "back"  # metadata kept
        if code in expected_keys:
            assert image.diagnosis_key == expected_keys[code] and "label_group9" not in image.meta
        else:  # a code spanning several conditions: no label, the nearest group, the code kept as the source label
            assert image.diagnosis_key is None and image.meta["label_group9"] == expected_groups[code], code
            assert image.meta["label_meaning"]
    assert seen == set(HAM_CODES)
    again = import_path(wb, admin, metadata, images_dir=tmp_path / "images")
    assert again.imported == 0 and again.already_present == len(lesion_of)


def test_a_recipe_csv_that_also_has_an_id_column_imports(wb, admin, tmp_path):
    """A HAM10000 file someone numbered (an `id` column first) crashed the import: the column met the recipe's {id}."""
    metadata, lesion_of = ham10000(tmp_path, n_lesions=4)
    with metadata.open(encoding="utf-8") as handle:
        header, *rows = list(csv.reader(handle))
    write_csv(metadata, ["id", *header], [[str(n), *row] for n, row in enumerate(rows)])
    report = import_path(wb, admin, metadata, images_dir=tmp_path / "images")
    assert report.dataset == "ham10000" and report.imported == len(lesion_of) and not report.failed
    with wb.session() as s:
        assert {i.external_id for i in s.scalars(select(Image))} == set(lesion_of)  # named by image_id, as always


def test_a_ham10000_row_without_its_image_waits_as_image_missing_and_a_second_import_completes_it(wb, admin, tmp_path):
    metadata, lesion_of = ham10000(tmp_path, n_lesions=3)
    first = sorted(lesion_of)[0]
    moved = tmp_path / "later" / f"{first}.jpg"
    moved.parent.mkdir()
    (next((tmp_path / "images").rglob(f"{first}.jpg"))).rename(moved)
    report = import_csv(wb, admin, metadata, images_dir=tmp_path / "images", dataset="ham10000")
    assert report.missing_images == 1 and report.imported == len(lesion_of) - 1
    with wb.session() as s:
        assert s.scalar(select(Image.status).where(Image.external_id == first)) == "image_missing"
    moved.rename(tmp_path / "images" / moved.name)
    assert import_csv(wb, admin, metadata, images_dir=tmp_path / "images").imported == 1
    with wb.session() as s:
        assert s.scalar(select(Image.status).where(Image.external_id == first)) == "pending"


def test_pad_ufes_20_reads_its_fitzpatrick_column_upper_case_codes_and_file_names(wb, admin, tmp_path):
    header = ["patient_id", "lesion_id", "smoke", "fitspatrick", "region", "diagnostic", "img_id", "biopsed"]
    rows = [
        ["PAT_1", "10", "False", "2.0", "FACE", "BCC", "PAT_1_10_1.png", "True"],
        ["PAT_1", "11", "False", "2.0", "ARM", "NEV", "PAT_1_11_2.png", "False"],
        ["PAT_2", "12", "", "", "BACK", "SEK", "PAT_2_12_3.png", "False"],
    ]
    for index, row in enumerate(rows):
        write(tmp_path / f"imgs_part_{index % 2 + 1}" / row[6], png_bytes(photo(100 + index)))
    report = import_path(wb, admin, write_csv(tmp_path / "metadata.csv", header, rows), images_dir=tmp_path)
    assert report.dataset == "pad-ufes-20" and report.imported == 3 and not report.failed
    with wb.session() as s:
        images = {i.external_id: i for i in s.scalars(select(Image))}
    assert images["PAT_1_10_1.png"].diagnosis_key == "basal cell carcinoma" and images["PAT_1_10_1.png"].fitzpatrick == 2
    assert images["PAT_1_11_2.png"].diagnosis_key == "nevocytic nevus"
    assert images["PAT_2_12_3.png"].diagnosis_key == "seborrheic keratosis" and images["PAT_2_12_3.png"].fitzpatrick is None
    assert images["PAT_1_11_2.png"].meta["patient_id"] == "PAT_1" and images["PAT_1_11_2.png"].meta["region"] == "ARM"


def test_ddi_skin_tone_bands_are_kept_as_bands_not_invented_types(wb, admin, tmp_path):
    header = ["", "ddi_id", "ddi_file", "skin_tone", "malignant", "disease"]
    rows = [
        ["0", "1", "000001.png", "56", "True", "melanoma-in-situ"],
        ["1", "2", "000002.png", "12", "False", "verruca-vulgaris"],
        ["2", "3", "000003.png", "78", "False", "dermatofibroma"],
    ]
    for index, row in enumerate(rows):
        write(tmp_path / "images" / row[2], png_bytes(photo(200 + index)))
    report = import_csv(wb, admin, write_csv(tmp_path / "ddi_metadata.csv", header, rows), images_dir=tmp_path / "images")
    assert report.dataset == "ddi" and report.imported == 2
    assert len(report.failed) == 1 and "skin tone '78'" in report.failed[0][1]  # that row only
    with wb.session() as s:
        images = {i.external_id: i for i in s.scalars(select(Image))}
    assert images["1"].diagnosis_key == "melanoma" and images["1"].fitzpatrick is None
    assert images["1"].meta["fitzpatrick_band"] == "V-VI" and images["2"].meta["fitzpatrick_band"] == "I-II"
    assert images["2"].diagnosis_key is None and images["2"].source_label == "verruca-vulgaris"  # no safe mapping


def test_a_named_recipe_refuses_a_csv_that_is_not_its_dataset_and_writes_nothing(wb, admin, tmp_path):
    write(tmp_path / "a.png", png_bytes(photo(1)))
    generic = write_csv(tmp_path / "in.csv", ["path", "label"], [["a.png", "melanoma"]])
    with pytest.raises(IngestError, match="not HAM10000.*lesion_id.*dx.*--dataset csv"):
        import_csv(wb, admin, generic, dataset="ham10000")
    with pytest.raises(IngestError, match="no dataset recipe 'ham20000'.*ham10000"):
        import_csv(wb, admin, generic, dataset="ham20000")
    with pytest.raises(IngestError, match="METADATA.csv --dataset ham10000 --images-dir"):
        import_path(wb, admin, tmp_path, dataset="ham10000")  # the images folder given instead of the CSV
    with wb.session() as s:
        assert s.scalar(select(Image.id)) is None
    metadata, _ = ham10000(tmp_path / "ham", n_lesions=2)
    with pytest.raises(IngestError, match="no image column.*looks like HAM10000.*--dataset ham10000"):
        import_csv(wb, admin, metadata, images_dir=tmp_path / "ham" / "images", dataset="csv")  # read generically


# -- exports of a public dataset (splits by lesion: tests/test_splits.py) --------------------------------------------


def test_exports_carry_pseudonyms_of_patient_and_lesion_ids_unless_raw_ids_are_asked_for(
    wb, admin, annotator, reviewer, tmp_path
):
    """group_keys held the imported lesion and patient ids in every record (8/8), while the security model said
    exports hold no imported metadata."""
    metadata, lesion_of = ham10000(tmp_path, n_lesions=6)
    verify_all(wb, annotator, reviewer, import_csv(wb, admin, metadata, images_dir=tmp_path / "images").image_ids)
    with wb.session() as s:
        lesion_by_sha = {i.sha256: i.meta["lesion_id"] for i in s.scalars(select(Image))}

    export_dataset(wb, admin, tmp_path / "default")
    shipped = records(tmp_path / "default")
    text = (tmp_path / "default" / "records.jsonl").read_text() + (tmp_path / "default" / "README.md").read_text()
    assert not any(lesion in text for lesion in set(lesion_of.values()))  # no raw id anywhere in the records or card
    pseudonyms = {}
    for record in shipped:  # one pseudonym per lesion, and a different one for each lesion
        pseudonyms.setdefault(lesion_by_sha[record["sha256"]], set()).add(record["group_keys"]["lesion_id"])
    assert all(len(v) == 1 for v in pseudonyms.values()) and len({next(iter(v)) for v in pseudonyms.values()}) == 6
    export_dataset(wb, admin, tmp_path / "again")  # the same key: the same pseudonyms in the next export
    assert [r["group_keys"] for r in records(tmp_path / "again")] == [r["group_keys"] for r in shipped]
    assert "pseudonyms of the lesion_id" in (tmp_path / "default" / "README.md").read_text()
    assert oct((wb.settings.home / "export-key").stat().st_mode & 0o777) == "0o600"

    export_dataset(wb, admin, tmp_path / "raw", selection=ExportFilter(raw_group_keys=True))
    raw = records(tmp_path / "raw")
    assert all(r["group_keys"]["lesion_id"] == lesion_by_sha[r["sha256"]] for r in raw)
    manifest = json.loads((tmp_path / "raw" / "manifest.json").read_text())
    assert manifest["filters"]["raw_group_keys"] is True
    assert "raw ids, exported on request" in (tmp_path / "raw" / "README.md").read_text()


def test_servers_sharing_one_workbench_share_its_pseudonym_key_from_the_environment(tmp_path, monkeypatch):
    from curation.errors import ConfigError
    from curation.export.records import export_key, pseudonym
    from curation.store.db import open_workbench
    from curation.store.settings import Settings

    one, two = (open_workbench(Settings.load(environ={}, home=tmp_path / name)) for name in ("one", "two"))
    assert export_key(one) != export_key(two)  # each home's own key: different pseudonyms
    monkeypatch.setenv("SKINFLOW_EXPORT_KEY", "ab" * 32)
    assert export_key(one) == export_key(two) == bytes.fromhex("ab" * 32)
    assert pseudonym(export_key(one), "lesion_id", "HAM_1") == pseudonym(export_key(two), "lesion_id", "HAM_1")
    monkeypatch.setenv("SKINFLOW_EXPORT_KEY", "not-hex")
    with pytest.raises(ConfigError, match="64 hex digits"):
        export_key(one)


def test_a_confirmed_group_code_exports_with_its_group(wb, admin, annotator, reviewer, tmp_path):
    metadata, _ = ham10000(tmp_path, n_lesions=7)  # one lesion per code
    report = import_csv(wb, admin, metadata, images_dir=tmp_path / "images")
    verify_all(wb, annotator, reviewer, report.image_ids)
    by_label = {r["source_label"]: r for r in records(export_dataset(wb, admin, tmp_path / "out").path)}
    assert (by_label["bkl"]["diagnosis_key"], by_label["bkl"]["group9"], by_label["bkl"]["group3"]) == (
        None,
        "benign epidermal",
        "benign",
    )
    assert by_label["akiec"]["group3"] == "malignant" and by_label["mel"]["group9"] == "malignant melanoma"


def test_other_images_of_the_same_lesion_are_listed_with_the_image(wb, admin, annotator, tmp_path):
    metadata, lesion_of = ham10000(tmp_path, n_lesions=8)
    import_csv(wb, admin, metadata, images_dir=tmp_path / "images")
    with wb.session() as s:
        ids = {i.external_id: i.id for i in s.scalars(select(Image))}
    lesion = "HAM_0000003"  # four images
    members = sorted(ids[image_id] for image_id, of in lesion_of.items() if of == lesion)
    assert len(members) == 4
    related = related_images(wb, annotator, members[0])
    assert [r.id for r in related] == members[1:] and {(r.column, r.value) for r in related} == {("lesion_id", lesion)}
    alone = ids[next(image_id for image_id, of in lesion_of.items() if of == "HAM_0000000")]  # one image
    assert related_images(wb, annotator, alone) == []
    bkl = ids[next(image_id for image_id, of in lesion_of.items() if of == "HAM_0000004")]
    assert image_detail(wb, annotator, bkl).source_group == "benign epidermal / benign"


def test_the_cli_imports_a_named_dataset_and_exports_grouped_by_lesion(tmp_path, monkeypatch):
    from curation.store.auth import add_user, get_actor
    from curation.store.db import open_workbench
    from curation.store.settings import Settings
    from tests.test_cli import run

    home = tmp_path / "wb"
    metadata, lesion_of = ham10000(tmp_path, n_lesions=10)
    imported = run(home, "import", str(metadata), "--dataset", "ham10000", "--images-dir", str(tmp_path / "images"))
    assert "ham10000" in imported.stdout and str(len(lesion_of)) in imported.stdout
    monkeypatch.setenv("SKINFLOW_HOME", str(home))
    monkeypatch.delenv("SKINFLOW_DATABASE_URL", raising=False)
    wb = open_workbench(Settings.load())
    admin = get_actor(wb, "admin")
    annotator = add_user(wb, admin, "ann", "annotator", "annotator-password")[0]
    reviewer = add_user(wb, admin, "rev", "reviewer", "reviewer-password")[0]
    with wb.session() as s:
        ids = list(s.scalars(select(Image.id)))
    verify_all(wb, annotator, reviewer, ids)
    wb.close()
    exported = run(home, "export", "--out", str(tmp_path / "v1"), "--group-by", "lesion_id")
    assert "10 split groups by lesion_id" in exported.stdout, exported.stdout
    refused = run(home, "export", "--out", str(tmp_path / "v2"), "--group-by", "patient_id", check=False)
    assert refused.returncode == 2 and refused.stderr.startswith("error: no exported record has 'patient_id'")
    assert not (tmp_path / "v2").exists()
