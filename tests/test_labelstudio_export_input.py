"""A Label Studio export is outside input (a partner's project): hostile exports fail whole with a clear error
when they are not an export at all, and otherwise skip the tasks of the wrong shape, each with its reason, while
the rest import. No server needed: this is the part of `ls pull` after the download."""

import json

import pytest
from sqlalchemy import func, select

from curation.export.labelstudio import LabelStudioError, import_export
from curation.ops.demo import build_demo
from curation.store.models import Annotation

EMAILS = {7: "partner@clinic.example"}
SOURCE = "http://127.0.0.1:8080/projects/3"


def task(image_id, result, task_id=1, completed_by=7, **extra):
    return {
        "id": task_id,
        "data": {"skinflow_id": image_id},
        "annotations": [{"id": task_id, "completed_by": completed_by, "result": result}],
        **extra,
    }


GOOD_RESULT = [{"from_name": "color", "value": {"choices": ["brown"]}}, {"from_name": "number", "value": {"choices": ["single"]}}]


def count(wb) -> int:
    with wb.session() as s:
        return s.scalar(select(func.count()).select_from(Annotation))


@pytest.mark.parametrize(
    "raw, saying",
    [
        (b'{"tasks": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "not readable JSON"),
        (json.dumps({"tasks": []}).encode(), "not a list of tasks"),
        (b"\xff\xfe not utf-8", "not readable JSON"),
    ],
)
def test_a_file_that_is_no_export_imports_nothing(wb, admin, raw, saying):
    build_demo(wb, admin, n=2, seed=0, verified_fraction=0.0, annotated_fraction=0.0)
    with pytest.raises(LabelStudioError, match=saying):
        import_export(wb, admin, raw, source=SOURCE, emails=EMAILS)
    assert count(wb) == 0


def test_tasks_of_the_wrong_shape_are_skipped_one_by_one_and_the_rest_import(wb, admin):
    build_demo(wb, admin, n=3, seed=0, verified_fraction=0.0, annotated_fraction=0.0)
    hostile = [
        "a string, not a task",
        {"id": 2, "data": ["not", "an", "object"], "annotations": []},
        {"id": 3, "data": {"skinflow_id": 1}, "annotations": {"1": "an object, not a list"}},
        {"id": 4, "data": {"skinflow_id": 1}, "annotations": ["a string"]},
        task(1, [{"from_name": "diagnosis", "value": {"taxonomy": "melanoma"}}, {"from_name": "other", "value": {"text": 5}}], 5),
        task(2, GOOD_RESULT, 6, completed_by={"email": {"an": "object"}}),
        task(10**30, GOOD_RESULT, 7),
        task(3, [{"from_name": "color", "value": ["a list"]}, "an item that is a string", {"from_name": "number"}], 8),
        task(2, GOOD_RESULT, 9),
    ]
    report = import_export(wb, admin, json.dumps(hostile).encode(), source=SOURCE, emails=EMAILS)
    skipped = dict(report.skipped)
    assert report.imported == 1 and {None, 3, 4, 5, 6, 7, 8} == set(skipped), report.skipped
    assert "no annotations list" in skipped[3] and "not an object" in skipped[4] and "no annotator" in skipped[6]
    assert "not a SkinFlow task" in skipped[7]
    assert "nothing usable in the caption" in skipped[5] and "cannot be described" in skipped[8]  # nothing readable left
    with wb.session() as s:
        [row] = s.scalars(select(Annotation))
    assert row.image_id == 2 and row.caption["color"] == ["brown"]
    assert row.origin.endswith("/projects/3/tasks/9/annotations/9")
    again = import_export(wb, admin, json.dumps(hostile).encode(), source=SOURCE, emails=EMAILS)
    assert again.imported == 0 and again.already_imported == 1
