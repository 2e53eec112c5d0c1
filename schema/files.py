"""The file primitives every layer shares: reading JSONL records, writing a file atomically, and keeping a CSV
cell from running as a spreadsheet formula.

They live in schema/ because schema/ is the bottom of the dependency graph (curation and the trainer both
read JSONL: exports, prediction files, metrics; both write files that other processes poll).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from schema.errors import SkinflowError

TEMP_PREFIX = ".tmp-"
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")  # what spreadsheet programs run as a formula
MAX_JSON_DEPTH = 64  # no record, caption or reply we read nests deeper than a handful of levels
MAX_JSONL_LINE_CHARS = 1_000_000
_JSON_STRUCTURE = re.compile(r'\\.|["\[\]{}]')  # escapes (skipped whole), quotes and brackets


def json_depth(text: str) -> int:
    """How deeply a JSON text nests ([ and { outside strings), found without parsing it: checked before
    json.loads, whose recursion a hostile text of 100,000 brackets would exhaust."""
    depth = deepest = 0
    in_string = False
    for match in _JSON_STRUCTURE.finditer(text):
        token = match.group()
        if token == '"':
            in_string = not in_string
        elif in_string or token[0] == "\\":
            continue
        elif token in "[{":
            depth += 1
            deepest = max(deepest, depth)
        else:
            depth -= 1
    return deepest


def loads_bounded(text: str, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """json.loads for text from outside (LLM replies, prediction files): ValueError when it nests deeper than
    max_depth, so a hostile text fails as bad input instead of a RecursionError."""
    if json_depth(text) > max_depth:
        raise ValueError(f"JSON nested deeper than {max_depth} levels")
    return json.loads(text)


def owner_only() -> None:
    """From now on this process, and every process it starts, creates files 0600 and folders 0700: what the
    workbench writes (the database with password hashes and the audit log, patient pictures, exports,
    backups, reports) is for the account that runs it. Called by the CLI and whenever a workbench opens."""
    os.umask(0o077)


def temp_owner_tag() -> str:
    """Put into every temp name: a later run can tell a killed writer's leftovers from a live writer's."""
    return f"{socket.gethostname()}-{os.getpid()}-"


def write_atomic(path: Path, data: bytes | str) -> None:
    """Write via a temp file in the same folder and rename: readers never see half a file, and a killed
    writer leaves only a `.tmp-<host>-<pid>-*` file that the store sweep (or `skinflow doctor --fix`) removes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=TEMP_PREFIX + temp_owner_tag(), suffix=path.suffix)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data.encode("utf-8") if isinstance(data, str) else data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json_atomic(path: Path, doc: Any) -> None:
    """A JSON document (sorted keys, one-space indent), written atomically."""
    write_atomic(path, json.dumps(doc, indent=1, sort_keys=True) + "\n")


def read_jsonl(path: str | Path, **options: Any) -> list[dict[str, Any]]:
    """The JSON objects of a JSONL file, blank lines skipped (options: see iter_jsonl)."""
    return [row for _, row in iter_jsonl(path, **options)]


def iter_jsonl(
    path: str | Path,
    *,
    check: Callable[[dict[str, Any]], bool] | None = None,
    problem: str = "is not a record",
    error: type[SkinflowError] = SkinflowError,
    skip_bad_lines: bool = False,
) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for each record of a JSONL file, blank lines skipped.

    A line that is not a JSON object, or fails `check(row)`, raises `error` naming the file and line, with
    `problem` saying what is wrong and what to do. `skip_bad_lines` drops such lines instead: for a file
    another process is appending to (the last line may be half written).
    """
    path = Path(path)
    try:
        handle = path.open(encoding="utf-8")
    except OSError as e:
        raise error(f"cannot read {path}: {e.strerror}") from None
    with handle:
        try:
            for number, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                try:
                    if len(line) > MAX_JSONL_LINE_CHARS:
                        raise ValueError(f"longer than {MAX_JSONL_LINE_CHARS:,} characters")
                    row = loads_bounded(line)
                except ValueError as e:  # JSONDecodeError is a ValueError
                    if skip_bad_lines:
                        continue
                    reason = e.msg if isinstance(e, json.JSONDecodeError) else str(e)
                    raise error(f"{path} line {number} is not valid JSON ({reason})") from None
                if not isinstance(row, dict) or (check is not None and not check(row)):
                    if skip_bad_lines:
                        continue
                    raise error(f"{path} line {number} {problem}")
                yield number, row
        except UnicodeDecodeError:
            raise error(f"{path} is not UTF-8 text; is it a JSONL file?") from None


def row_id(value: object) -> int | None:
    """An id read from an outside file (a prediction line, a Label Studio task) when it is one a database row can
    have: a positive integer under 2**63, not a bool. A 30-digit id crashed the SQLite lookup."""
    return value if isinstance(value, int) and not isinstance(value, bool) and 0 < value < 2**63 else None


def neutralise_formula(value: Any) -> Any:
    """A CSV cell that a spreadsheet program would run (it starts with = + - @, tab or CR) gets a leading quote,
    which keeps it text; anything else is returned as it is."""
    return "'" + value if isinstance(value, str) and value.startswith(FORMULA_START) else value


def file_sha256(path: Path) -> str:
    """The sha256 of a file, read in blocks (an image, an export's file)."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()
