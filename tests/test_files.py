"""The shared file primitives (schema/files.py): one JSONL reader and one atomic writer for every layer."""

import pytest

from schema.errors import SkinflowError
from schema.files import TEMP_PREFIX, iter_jsonl, read_jsonl, write_atomic, write_json_atomic


def test_jsonl_records_carry_their_line_numbers_and_bad_lines_name_the_line(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text('{"a": 1}\n\n{"a": 2}\n[1, 2]\n', encoding="utf-8")
    with pytest.raises(SkinflowError, match=r"rows.jsonl line 4 is not a record"):
        read_jsonl(path)
    path.write_text('{"a": 1}\n\n{"a": 2}\n', encoding="utf-8")
    assert list(iter_jsonl(path)) == [(1, {"a": 1}), (3, {"a": 2})]

    class Mine(SkinflowError):
        pass

    with pytest.raises(Mine, match="line 3 lacks b; add it"):
        read_jsonl(path, check=lambda row: row["a"] == 1, problem="lacks b; add it", error=Mine)


def test_a_file_being_appended_to_is_read_up_to_its_half_written_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1}\n{"step": 2}\n{"st', encoding="utf-8")
    assert read_jsonl(path, skip_bad_lines=True) == [{"step": 1}, {"step": 2}]
    with pytest.raises(SkinflowError, match="line 3 is not valid JSON"):
        read_jsonl(path)


def test_unreadable_and_binary_files_are_refused_with_what_they_are(tmp_path):
    with pytest.raises(SkinflowError, match="cannot read"):
        read_jsonl(tmp_path / "missing.jsonl")
    (tmp_path / "x.jsonl").write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(SkinflowError, match="not UTF-8"):
        read_jsonl(tmp_path / "x.jsonl")


def test_atomic_writes_replace_whole_files_and_leave_no_temp_file(tmp_path):
    target = tmp_path / "deep" / "doc.json"
    write_json_atomic(target, {"b": 1, "a": [1]})
    assert target.read_text() == '{\n "a": [\n  1\n ],\n "b": 1\n}\n'
    write_atomic(target, b"new")
    assert target.read_bytes() == b"new"
    assert [p.name for p in target.parent.iterdir()] == ["doc.json"]
    with pytest.raises(TypeError):
        write_atomic(target, 42)  # a failed write leaves the old file and no temp file
    assert target.read_bytes() == b"new" and not list(target.parent.glob(TEMP_PREFIX + "*"))
