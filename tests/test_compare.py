import pytest

from schema import Caption, CaptionError, caption_scores, field_score
from schema.fields import FIELD_KEYS


def test_multi_fields_use_set_f1_after_normalisation():
    assert field_score("color", ["red", "brown"], ["erythematous", "hyperpigmented"]) == 1.0
    assert field_score("color", ["red"], ["erythematous", "brown"]) == pytest.approx(2 / 3)
    assert field_score("color", ["black"], ["brown"]) == 0.0


def test_ordinals_score_exact_adjacent_other():
    assert field_score("number", "few", "few") == 1.0
    assert field_score("number", "few", "multiple") == 0.5
    assert field_score("number", "single", "numerous") == 0.0
    assert field_score("size", "<5 mm", "5-10 mm") == 0.5


def test_free_text_uses_token_f1():
    assert field_score("other", "central umbilication", "umbilication central") == 1.0
    assert field_score("other", "central umbilication present", "central crust") == pytest.approx(2 * 1 / 5)


def test_empty_rules():
    for field, value in (("color", ["red"]), ("number", "few"), ("other", "text")):
        assert field_score(field, None, None) == 1.0
        assert field_score(field, value, None) == 0.0
        assert field_score(field, None, value) == 0.0


def test_unknown_field_and_bad_value_are_errors():
    with pytest.raises(CaptionError, match="unknown field"):
        field_score("hair", "a", "b")
    with pytest.raises(CaptionError, match="number"):
        field_score("number", "lots", "few")


def test_caption_scores_cover_all_fields_and_match_field_score():
    pred = Caption(color=["red"], number="few", size="1-2 cm", other="scale")
    ref = Caption(color=["red", "brown"], number="multiple", size="1-2 cm", texture=["scaly"])
    scores = caption_scores(pred, ref)
    assert list(scores) == list(FIELD_KEYS)
    assert scores["color"] == pytest.approx(2 / 3)
    assert scores["number"] == 0.5 and scores["size"] == 1.0
    assert scores["texture"] == 0.0 and scores["other"] == 0.0 and scores["shape"] == 1.0
    assert caption_scores(ref, ref) == {k: 1.0 for k in FIELD_KEYS}
