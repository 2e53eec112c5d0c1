"""Reasoning-frequency weights on hand-made reasonings with known mentions."""

import pytest

from curation.assist.weights import FIELD_LEXICON, compute_weights, field_mentions, sentences_mentioning
from schema.fields import FIELD_KEYS

pytestmark = pytest.mark.database  # run again on PostgreSQL by `make test-postgres`

REASONINGS = [
    "A brown macule.",  # color, lesion_type
    "Red plaques with silvery scale.",  # color, lesion_type, texture
    "The distribution is symmetric over both elbows.",  # distribution, location
    "Nothing else to add.",  # nothing
]


def test_each_reasoning_mentions_the_expected_fields():
    assert [field_mentions(r) for r in REASONINGS] == [
        ["color", "lesion_type"],
        ["color", "lesion_type", "texture"],
        ["location", "distribution"],
        [],
    ]


def test_weights_are_exactly_the_normalised_shares_with_the_floor():
    weights, counts = compute_weights(REASONINGS, floor=0.01)
    assert counts == {**{k: 0 for k in FIELD_KEYS}, "color": 2, "lesion_type": 2, "texture": 1, "distribution": 1, "location": 1}
    # 6 unmentioned fields sit on the floor (0.06 in all); the other 0.94 is shared by mention count (7 mentions)
    expected = {k: 0.01 for k in FIELD_KEYS}
    expected.update(color=0.94 * 2 / 7, lesion_type=0.94 * 2 / 7, texture=0.94 / 7, distribution=0.94 / 7, location=0.94 / 7)
    assert weights == pytest.approx(expected, abs=1e-12)
    assert sum(weights.values()) == pytest.approx(1.0, abs=1e-12)
    again, _ = compute_weights(list(reversed(REASONINGS)), floor=0.01)
    assert again == weights  # same reasonings (any order), same weights, exactly


def test_a_share_pushed_under_the_floor_is_raised_and_the_rest_rescaled():
    texts = ["brown"] * 999 + ["papule"]
    weights, counts = compute_weights(texts, floor=0.01)
    assert counts["color"] == 999 and counts["lesion_type"] == 1
    # lesion_type's share (0.001) is under the floor, so 10 fields sit at 0.01 and color takes the rest
    assert weights["lesion_type"] == 0.01 and weights["color"] == pytest.approx(0.90, abs=1e-12)
    assert min(weights.values()) >= 0.01


def test_no_mentions_gives_equal_weights_and_a_bad_floor_is_refused():
    weights, _ = compute_weights(["Nothing relevant here."], floor=0.01)
    assert set(weights.values()) == {1 / 11}
    with pytest.raises(Exception, match="floor"):
        compute_weights(REASONINGS, floor=0.2)


def test_lexicon_rules():
    assert "other" not in FIELD_LEXICON["other"]  # the bare word is too common
    assert field_mentions("No other lesions.") == []
    assert field_mentions("Other descriptors: central dell.") == ["other"]
    assert field_mentions("About 7 mm across.") == ["size"]
    assert field_mentions("Erythematously") == []  # whole words only
    assert sentences_mentioning("A brown macule. Itchy. Red papules!", "color") == ["A brown macule.", "Red papules!"]
