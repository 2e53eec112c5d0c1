import json

import pytest

from schema import Relevance, TaxonomyError, default_taxonomy, is_safety_error, load_taxonomy, normalise_diagnosis, relevance


def test_fitzpatrick17k_has_114_labels_9_groups_3_groups_matching_the_source_csv():
    import csv
    from pathlib import Path

    tax = default_taxonomy()
    assert len(tax.labels) == 114 and len(tax.groups9()) == 9
    assert tax.groups3() == ["benign", "malignant", "non-neoplastic"]
    source = Path(__file__).resolve().parent / "data" / "fitzpatrick17k.csv"  # the shipped data was derived from it
    with source.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 16577
    for row in rows:  # every row must agree
        label = tax.label(row["label"])
        assert (label.group9, label.group3) == (row["nine_partition_label"], row["three_partition_label"])
    assert "CC BY-NC-SA" in tax.meta["license"]


def test_concatenated_source_strings_get_readable_display_names():
    tax = default_taxonomy()
    assert tax.label("acquired autoimmune bullous diseaseherpes gestationis").display.startswith("Herpes gestationis")
    assert tax.label("superficial spreading melanoma ssm").display == "Superficial spreading melanoma (SSM)"
    displays = [label.display for label in tax.labels.values()]
    assert len(set(displays)) == len(displays)


@pytest.mark.parametrize(
    "text,key",
    [
        ("BCC", "basal cell carcinoma"),
        ("basal cell ca", "basal cell carcinoma"),
        ("Basal-cell carcinoma", "basal cell carcinoma"),
        ("basal cell carcinoma", "basal cell carcinoma"),
        ("Melanomma", "melanoma"),
        ("Behçet's disease", "behcets disease"),
        ("herpes gestationis", "acquired autoimmune bullous diseaseherpes gestationis"),
        ("mole", "nevocytic nevus"),
        ("Seborrhoeic keratosis", "seborrheic keratosis"),
        ("psoriasis vulgaris", "psoriasis"),
        ("  PSORIASIS. ", "psoriasis"),
    ],
)
def test_normalise_diagnosis_finds_the_key(text, key):
    assert normalise_diagnosis(text) == key


@pytest.mark.parametrize("text", ["pink rash", "", None, "xyz", "carcinoma"])
def test_unmatched_text_stays_free_text(text):
    assert normalise_diagnosis(text) is None


def test_relevance_levels():
    assert relevance("bcc", "basal cell carcinoma") is Relevance.EXACT
    assert relevance("squamous cell carcinoma", "basal cell carcinoma") is Relevance.SAME_GROUP9
    assert relevance("melanoma", "basal cell carcinoma") is Relevance.SAME_GROUP3
    assert relevance("psoriasis", "basal cell carcinoma") is Relevance.UNRELATED
    assert relevance(None, "psoriasis") is Relevance.UNRELATED
    with pytest.raises(TaxonomyError, match="not in taxonomy"):
        relevance("psoriasis", "no such disease at all")


def test_safety_error_is_a_non_malignant_answer_to_a_malignant_truth():
    assert is_safety_error("nevocytic nevus", "melanoma")
    assert is_safety_error(None, "melanoma")
    assert is_safety_error("eczema", "basal cell carcinoma")
    assert not is_safety_error("basal cell carcinoma", "melanoma")
    assert not is_safety_error("melanoma", "nevocytic nevus")  # a false alarm, not a miss


def test_a_team_can_load_its_own_taxonomy(tmp_path):
    path = tmp_path / "tax.json"
    path.write_text(
        json.dumps(
            {
                "_meta": {"name": "clinic", "malignant_groups": ["cancer"]},
                "labels": {
                    "mel": {"nine_partition": "melanocytic", "three_partition": "cancer", "synonyms": ["melanoma"]},
                    "nev": {"nine_partition": "melanocytic", "three_partition": "benign", "display": "Nevus"},
                },
            }
        )
    )
    tax = load_taxonomy(path)
    assert tax.normalise("Melanoma") == "mel" and tax.normalise("nevus") == "nev"
    assert tax.relevance("nev", "mel") is Relevance.SAME_GROUP9
    assert tax.is_safety_error("nev", "mel")
    assert tax.version.startswith("clinic-")


@pytest.mark.parametrize(
    "content,match",
    [
        ("not json", "not valid UTF-8 JSON"),
        ("[]", "JSON object"),
        ('{"labels": {}}', "no 'labels'"),
        ('{"labels": {"a": {"nine_partition": "x"}}}', "needs 'nine_partition' and 'three_partition'"),
    ],
)
def test_malformed_taxonomy_files_are_clear_errors(tmp_path, content, match):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(TaxonomyError, match=match):
        load_taxonomy(path)
    with pytest.raises(TaxonomyError, match="cannot read"):
        load_taxonomy(tmp_path / "missing.json")
