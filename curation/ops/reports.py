"""Evaluation reports the app shows: folders written by `skinflow eval --out <home>/reports/NAME`."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from curation.store.auth import Actor, require
from curation.store.db import Workbench


@dataclass(frozen=True)
class Report:
    name: str
    folder: Path
    data: dict[str, Any]
    markdown: str


def reports_dir(wb: Workbench) -> Path:
    return wb.settings.home / "reports"


def list_reports(wb: Workbench, actor: Actor) -> list[Report]:
    """Every readable report under <home>/reports/, newest first."""
    require(actor, "reviewer", "see evaluation reports")
    found = []
    for path in reports_dir(wb).glob("*/report.json") if reports_dir(wb).is_dir() else []:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            markdown = (path.parent / "report.md").read_text(encoding="utf-8")
        except (OSError, json.JSONDecodeError, UnicodeDecodeError):
            continue  # a report being written, or not one of ours
        found.append((path.stat().st_mtime, Report(path.parent.name, path.parent, data, markdown)))
    return [report for _, report in sorted(found, key=lambda pair: -pair[0])]
