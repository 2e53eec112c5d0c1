"""Field-level salvage (curation/assist/salvage.py) over a corpus of replies the way vision models and annotation tools
write them: each failure class keeps the good fields, coerces what is safe, and says what it did."""

import pytest

from curation.assist.salvage import salvage_caption
from schema.errors import CaptionError

GOOD = {"color": ["brown"], "shape": ["round"], "lesion_type": ["papule"], "location": ["back"]}

# (what a model wrote, the fields expected after salvage, {field: action})
CORPUS = [
    ({"number": "2"}, {"number": "few"}, {"number": "changed"}),
    ({"number": 1}, {"number": "single"}, {"number": "changed"}),
    ({"number": "about 12 lesions"}, {"number": "multiple"}, {"number": "changed"}),
    ({"number": "multiple (about 10)"}, {"number": "multiple"}, {"number": "changed"}),
    ({"number": 40}, {"number": "numerous"}, {"number": "changed"}),
    ({"number": "zero"}, {"number": None}, {"number": "dropped"}),
    ({"number": "tons"}, {"number": None}, {"number": "dropped"}),
    ({"size": "3-4 mm"}, {"size": "<5 mm", "size_mm": 3.5}, {"size": "changed"}),
    ({"size": "1 to 1.5 cm"}, {"size": "1-2 cm", "size_mm": 12.5}, {"size": "changed"}),
    ({"size": "approximately 8mm across"}, {"size": "5-10 mm", "size_mm": 8.0}, {"size": "changed"}),
    ({"size": "1-2 cm", "size_mm": 8}, {"size": "5-10 mm", "size_mm": 8.0}, {"size": "changed"}),
    ({"size": "3-4 mm", "size_mm": 30}, {"size": "2-5 cm", "size_mm": 30.0}, {"size": "changed"}),
    ({"size": "big"}, {"size": None}, {"size": "dropped"}),
    ({"size_mm": 0}, {"size_mm": None}, {"size_mm": "dropped"}),
    ({"size_mm": -3}, {"size_mm": None}, {"size_mm": "dropped"}),
    ({"size_mm": 5000}, {"size_mm": None}, {"size_mm": "dropped"}),
    ({"size_mm": "12 mm"}, {"size": "1-2 cm", "size_mm": 12.0}, {}),
    ({"size_mm": True}, {"size_mm": None}, {"size_mm": "dropped"}),
    ({"other": ["silvery scale", "Auspitz sign"]}, {"other": "silvery scale; Auspitz sign"}, {"other": "changed"}),
    ({"other": {"note": "x"}}, {"other": ""}, {"other": "dropped"}),
    ({"confidence": 0.9, "reasoning": "looks like BCC"}, {}, {"confidence": "ignored", "reasoning": "ignored"}),
    ({"color": ["blue"], "colour": ["red"]}, {"color": ("blue",)}, {"color": "ignored"}),  # the first one given wins
    ({"color": 7}, {"color": ()}, {"color": "dropped"}),
    ({"texture": ["x" * 200]}, {"texture": ()}, {"texture": "dropped"}),
]


@pytest.mark.parametrize("reply, expected, actions", CORPUS, ids=[str(i) for i in range(len(CORPUS))])
def test_each_failure_class_keeps_the_good_fields_and_notes_what_it_did(reply, expected, actions):
    caption, notes = salvage_caption({**GOOD, **reply})
    assert caption.color or "color" in expected  # the good fields stay
    assert caption.shape == ("round",) and caption.lesion_type == ("papule",) and caption.location == ("back",)
    for field, value in expected.items():
        assert getattr(caption, field) == (tuple(value) if isinstance(value, list) else value), field
    assert {n.field: n.action for n in notes} == actions
    assert all(n.reason and len(n.original) <= 120 for n in notes)


def test_a_valid_caption_passes_untouched_and_nothing_usable_fails_with_every_reason():
    caption, notes = salvage_caption({**GOOD, "number": "few", "size": "5-10 mm", "size_mm": 7})
    assert notes == [] and caption.size_mm == 7.0
    with pytest.raises(CaptionError, match="nothing usable.*color.*number"):
        salvage_caption({"color": 7, "number": "tons"})
    with pytest.raises(CaptionError, match="object"):
        salvage_caption(["color", "brown"])
    empty, notes = salvage_caption({"color": [], "number": None})  # a valid "nothing applies" caption
    assert empty.is_empty() and notes == []
