"""Crosswalks that hold on the real files: every code each dataset documents lands on a taxonomy key or a group;
rows the crosswalk cannot place keep the dataset's own three-way truth (DDI malignant, ISIC benign_malignant); ISIC
Archive rows carry their per-image license; an empty image_name falls back to isic_id."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from curation.export.dataset import export_dataset
from curation.export.records import ExportFilter
from curation.ingest.csv_import import import_csv
from curation.ingest.datasets import dataset_recipes
from curation.labelling.source_labels import verify_source_labels
from curation.store.models import Image
from schema.taxonomy import default_taxonomy
from tests.helpers import jpeg_bytes, photo, png_bytes, write
from tests.test_datasets import records, write_csv

pytestmark = pytest.mark.database  # run again on PostgreSQL by `make test-postgres`

# the codes each dataset's paper documents (HAM10000: Tschandl 2018; PAD-UFES-20: Pacheco 2020; ISIC 2020:
# Rotemberg 2021, the `diagnosis` values of the training CSV)
DOCUMENTED = {
    "ham10000": ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"],
    "pad-ufes-20": ["ACK", "BCC", "MEL", "NEV", "SCC", "SEK"],
    "isic": [
        "nevus",
        "melanoma",
        "seborrheic keratosis",
        "lentigo NOS",
        "lichenoid keratosis",
        "solar lentigo",
        "cafe-au-lait macule",
        "atypical melanocytic proliferation",
        "unknown",
    ],
}
# the 78 `disease` codes of DDI's ddi_metadata.csv (Daneshjou et al. 2022)
DOCUMENTED[
    "ddi"
] = """melanoma-in-situ mycosis-fungoides squamous-cell-carcinoma-in-situ basal-cell-carcinoma squamous-cell-carcinoma
melanoma-acral-lentiginous basal-cell-carcinoma-superficial squamous-cell-carcinoma-keratoacanthoma subcutaneous-t-cell-lymphoma
melanocytic-nevi seborrheic-keratosis-irritated focal-acral-hyperkeratosis hyperpigmentation lipoma foreign-body-granuloma
blue-nevus verruca-vulgaris acrochordon wart epidermal-nevus abrasions-ulcerations-and-physical-injuries
basal-cell-carcinoma-nodular epidermal-cyst acquired-digital-fibrokeratoma seborrheic-keratosis trichilemmoma
pyogenic-granuloma neurofibroma syringocystadenoma-papilliferum nevus-lipomatosus-superficialis benign-keratosis
inverted-follicular-keratosis onychomycosis dermatofibroma trichofolliculoma lymphocytic-infiltrations prurigo-nodularis
kaposi-sarcoma scar eccrine-poroma angioleiomyoma keloid hematoma metastatic-carcinoma melanoma angioma folliculitis
atypical-spindle-cell-nevus-of-reed xanthogranuloma eczema-spongiotic-dermatitis arteriovenous-hemangioma acne-cystic
verruciform-xanthoma molluscum-contagiosum condyloma-accuminatum morphea neuroma dysplastic-nevus nodular-melanoma-(nm)
actinic-keratosis pigmented-spindle-cell-nevus-of-reed dermatomyositis glomangioma cellular-neurothekeoma fibrous-papule
graft-vs-host-disease lichenoid-keratosis reactive-lymphoid-hyperplasia coccidioidomycosis leukemia-cutis sebaceous-carcinoma
chondroid-syringoma tinea-pedis solar-lentigo clear-cell-acanthoma abscess blastic-plasmacytoid-dendritic-cell-neoplasm
acral-melanotic-macule""".split()
LEFT_FOR_THE_DERMATOLOGIST = {"atypical melanocytic proliferation", "unknown"}  # placed by the row's benign_malignant


@pytest.mark.parametrize("name", list(DOCUMENTED))
def test_every_documented_code_lands_on_a_key_or_a_group(name):
    recipe, taxonomy = dataset_recipes()[name], default_taxonomy()
    for code in DOCUMENTED[name]:
        mapped = recipe.map_label(code, taxonomy)
        assert mapped.known, (name, code)  # in the crosswalk: not left to the fuzzy normaliser
        if code not in LEFT_FOR_THE_DERMATOLOGIST:
            assert mapped.key or mapped.group3, (name, code)


def test_ddi_codes_the_crosswalk_missed_are_placed_and_the_malignant_column_groups_the_rest(wb, admin, tmp_path):
    recipe, taxonomy = dataset_recipes()["ddi"], default_taxonomy()
    for code in ("solar-lentigo", "benign-keratosis", "angioma", "acrochordon", "neurofibroma", "lipoma", "eczema"):
        assert recipe.map_label(code, taxonomy).group3, code
    lymphoma = recipe.map_label("subcutaneous-t-cell-lymphoma", taxonomy)
    assert lymphoma.key != "mycosis fungoides" and lymphoma.group9 == "malignant cutaneous lymphoma"
    header = ["", "ddi_id", "ddi_file", "skin_tone", "malignant", "disease"]
    rows = [
        ["0", "1", "000001.png", "56", "True", "metastatic-carcinoma"],  # no crosswalk entry, marked malignant
        ["1", "2", "000002.png", "34", "False", "some-benign-thing"],  # not malignant: benign or inflammatory, unknown
    ]
    for index, row in enumerate(rows):
        write(tmp_path / "ddi" / row[2], png_bytes(photo(1300 + index)))
    import_csv(wb, admin, write_csv(tmp_path / "ddi_metadata.csv", header, rows), images_dir=tmp_path / "ddi")
    with wb.session() as s:
        groups = {i.external_id: (i.meta.get("label_group3"), i.meta.get("label_provenance")) for i in s.scalars(select(Image))}
    assert groups == {"1": ("malignant", "histopathology"), "2": (None, "histopathology")}


def test_isic_unknown_keeps_its_benign_malignant_truth_and_archive_licenses_are_carried(wb, admin, tmp_path):
    header = [
        "image_name",
        "isic_id",
        "patient_id",
        "diagnosis",
        "benign_malignant",
        "copyright_license",
        "fitzpatrick_skin_type",
    ]
    rows = [
        ["ISIC_0000001", "ISIC_0000001", "IP_1", "unknown", "benign", "CC-0", "V"],
        ["", "ISIC_0000002", "IP_1", "unknown", "malignant", "CC-BY", ""],  # an empty image_name: isic_id names it
        ["ISIC_0000003", "ISIC_0000003", "IP_2", "melanoma", "malignant", "CC-BY-NC", "II"],
    ]
    for index, row in enumerate(rows):
        write(tmp_path / "isic" / f"{row[1]}.jpg", jpeg_bytes(photo(1400 + index)))
    report = import_csv(wb, admin, write_csv(tmp_path / "isic.csv", header, rows), images_dir=tmp_path / "isic")
    assert report.imported == 3 and not report.failed
    verify_source_labels(wb, admin, "isic")
    out = records(export_dataset(wb, admin, tmp_path / "v1", selection=ExportFilter(label_kinds="source")).path)
    by_id = {r["source_id"]: r for r in out}
    assert [by_id[f"ISIC_000000{i}"]["group3"] for i in (1, 2, 3)] == ["benign", "malignant", "malignant"]
    assert [by_id[f"ISIC_000000{i}"]["image_license"] for i in (1, 2, 3)] == ["CC-0", "CC-BY", "CC-BY-NC"]
    assert [by_id[f"ISIC_000000{i}"]["fitzpatrick"] for i in (1, 2, 3)] == [5, None, 2]  # the Archive's skin type
    card = (tmp_path / "v1" / "README.md").read_text()
    assert "Per-image licenses, as the source gives them: CC-0 (1), CC-BY (1), CC-BY-NC (1)" in card
