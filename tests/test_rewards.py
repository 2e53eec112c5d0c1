"""Golden values for the stage I and stage II rewards, computed by hand from docs/fdlinear.md."""

import pytest

from schema.caption import Caption, render
from schema.errors import CaptionError
from trainer.rewards import (
    bind,
    caption_format_reward,
    caption_reward,
    diagnosis_format_reward,
    diagnosis_reward,
    normalised_weights,
    parse_diagnoses,
    positional_weight,
)

TRUTH = Caption(color=["erythematous"], lesion_type=["plaque"], texture=["scaly"], number="few").to_json()


def chat(text: str) -> list[dict]:
    return [{"role": "assistant", "content": text}]


# -- stage I ------------------------------------------------------------------------------------------
def test_a_perfect_caption_scores_one_under_any_weights():
    perfect = render(Caption(**{k: v for k, v in TRUTH.items() if k != "size_mm"}))
    assert caption_reward([chat(perfect)], [TRUTH]) == [pytest.approx(1.0)]
    assert caption_reward([perfect], [TRUTH], weights={"color": 3, "number": 1}) == [pytest.approx(1.0)]


def test_caption_reward_weighs_field_scores():
    # color {erythematous, white} vs {erythematous}: set F1 = 2*1/(2+1) = 2/3; number single vs few: adjacent = 0.5
    # texture missing vs scaly: 0. Weights color 2, number 1, texture 1 -> alpha 0.5, 0.25, 0.25
    text = "Color: erythematous, white\nLesion type: plaque\nNumber: single"
    expected = 0.5 * (2 / 3) + 0.25 * 0.5 + 0.25 * 0.0
    assert caption_reward([chat(text)], [TRUTH], weights={"color": 2, "number": 1, "texture": 1}) == [pytest.approx(expected)]
    # uniform: fields both-empty score 1 (location, shape, size, border_surface, distribution, surrounding, other = 7),
    # color 2/3, lesion_type 1, number 0.5, texture 0 -> (7 + 2/3 + 1 + 0.5) / 11
    assert caption_reward([text], [TRUTH]) == [pytest.approx((7 + 2 / 3 + 1 + 0.5) / 11)]


def test_unparseable_caption_scores_zero_and_fails_the_format_reward():
    garbage = ["I cannot help with that.", "", chat("{not json"), None]
    assert caption_reward(garbage, [TRUTH] * 4) == [0.0] * 4
    assert caption_format_reward(garbage + ["Color: red\nNumber: few"]) == [0.0, 0.0, 0.0, 0.0, 1.0]


def test_caption_reward_accepts_the_reference_as_json_text():
    import json

    assert caption_reward(["Color: erythematous"], [json.dumps(TRUTH)], weights={"color": 1}) == [pytest.approx(1.0)]


def test_weights_are_checked_and_normalised():
    assert sum(normalised_weights({"color": 5, "size": 5}).values()) == pytest.approx(1.0)
    with pytest.raises(CaptionError, match="unknown fields"):
        normalised_weights({"colour": 1})
    with pytest.raises(CaptionError, match="sum to zero"):
        normalised_weights({"color": 0})


# -- stage II -----------------------------------------------------------------------------------------
def test_positional_weights_run_from_one_to_one_over_k():
    assert [positional_weight(r) for r in range(1, 8)] == pytest.approx([1, 5 / 6, 4 / 6, 3 / 6, 2 / 6, 1 / 6, 0])
    assert [positional_weight(r, 3) for r in (1, 2, 3)] == pytest.approx([1, 2 / 3, 1 / 3])


@pytest.mark.parametrize(
    "answer, truth, expected",
    [
        ("psoriasis", "psoriasis", 1.0),  # exact at rank 1
        ("1. Kaposi sarcoma\n2. Psoriasis", "psoriasis", 5 / 6),  # numbering, display names, rank 2
        ("eczema\npsoriasis", "psoriasis", 5 / 6),  # exact at 2 (5/6) beats same group at 1 (0.5)
        ("acne\nkaposi sarcoma", "psoriasis", 0.5),  # same nine-group at rank 1: half credit
        ("kaposi sarcoma\ndermatofibroma\nacne", "psoriasis", 0.5 * 4 / 6),  # same group at rank 3
        ("kaposi sarcoma\ndermatofibroma", "psoriasis", 0.0),  # nothing related
        ("dermatofibroma\nmelanoma", "melanoma", 5 / 6 - 0.5),  # malignant truth, benign first: penalty
        ("basal cell carcinoma\nlupus erythematosus\nmelanoma", "melanoma", 4 / 6),  # malignant first: no penalty
        ("a\nb\nc\nd\ne\nf\npsoriasis", "psoriasis", 0.0),  # beyond K = 6
        ('["kaposi sarcoma", "psoriasis"]', "psoriasis", 5 / 6),  # a JSON list
        ("kaposi sarcoma, psoriasis", "psoriasis", 5 / 6),  # one comma-separated line
        ("", "psoriasis", 0.0),
        ("unintelligible text", "melanoma", 0.0),  # unrecognised first entry: no penalty
    ],
)
def test_diagnosis_reward_golden(answer, truth, expected):
    assert diagnosis_reward([chat(answer)], [truth]) == [pytest.approx(expected)]


def test_diagnosis_reward_settings():
    assert diagnosis_reward(["acne"], ["psoriasis"], partial_credit=False) == [0.0]
    assert diagnosis_reward(["dermatofibroma\nmelanoma"], ["melanoma"], partial_credit=False) == [pytest.approx(5 / 6)]
    assert diagnosis_reward(["dermatofibroma\nmelanoma"], ["melanoma"], safety_penalty=1.0) == [pytest.approx(5 / 6 - 1)]
    assert diagnosis_reward(["x\ny\npsoriasis"], ["psoriasis"], k=3) == [pytest.approx(1 / 3)]
    assert diagnosis_reward(["acne"], ["psoriasis"], group_credit=0.25) == [pytest.approx(0.25)]


@pytest.mark.parametrize(
    "answer, expected",
    [
        ("psoriasis\nmelanoma", 1.0),
        ("", 0.0),
        ("psoriasis\npsoriasis", 0.5),  # repeated entry
        ("melanoma\nMelanoma", 0.5),  # repeated after normalisation
        ("psoriasis\nzzqx unheard of", 0.75),  # one entry not in the taxonomy
        ("acne\neczema\npsoriasis\nmelanoma\nvitiligo\nscabies\nrosacea", 0.5),  # 7 > K entries
        ("qq\nqq", 0.0),  # unknown twice and repeated: 1 - 0.5 - 0.5 -> 0
    ],
)
def test_diagnosis_format_reward_golden(answer, expected):
    assert diagnosis_format_reward([chat(answer)]) == [pytest.approx(expected)]


def test_parse_diagnoses_strips_bullets_and_numbering():
    assert parse_diagnoses("- psoriasis\n* eczema\n3) acne\n\n4. rosacea\n") == ["psoriasis", "eczema", "acne", "rosacea"]


def test_bind_fixes_settings_and_keeps_the_name_trl_logs():
    reward = bind(diagnosis_reward, k=3)
    assert reward.__name__ == "diagnosis_reward"
    assert reward(["x\ny\npsoriasis"], diagnosis_key=["psoriasis"]) == [pytest.approx(1 / 3)]


def test_lengths_must_match():
    with pytest.raises(ValueError):
        diagnosis_reward(["psoriasis", "acne"], ["psoriasis"])
