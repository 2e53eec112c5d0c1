"""What a run folder holds, read by the workbench: its metrics, an ablation's report, and a run trained outside the
app (`skinflow train`) entered in the registry. The folder is the trainer's (schema/run_files.py types the files
both sides share); curation/ops/runs.py is the lifecycle of the runs the app starts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sqlalchemy import select

from curation.store import audit
from curation.store.auth import Actor, require
from curation.store.db import Workbench
from curation.store.models import Export, TrainingRun, utcnow
from schema.files import read_jsonl
from schema.run_files import PROGRESS_FILE, read_progress


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}


def read_metrics(wb: Workbench, run_id: int) -> list[dict[str, Any]]:
    path = wb.settings.run_dir(run_id) / "metrics.jsonl"
    # the trainer appends while we read: a half-written last line is skipped, not an error
    return read_jsonl(path, skip_bad_lines=True) if path.exists() else []


def metrics_summary(metrics: list[dict[str, Any]]) -> dict[str, Any]:
    """The last logged value of every numeric key, per stage."""
    out: dict[str, dict[str, float]] = {}
    for row in metrics:
        stage = out.setdefault(f"stage{row.get('stage')}", {})
        for key, value in row.items():
            if isinstance(value, (int, float)) and key != "stage":
                stage[key] = value
    return out


def ablation_report(wb: Workbench, run_id: int) -> dict[str, Any] | None:
    """The finished ablation's report (trainer/ablate.py writes it), with the chart's path; None until done."""
    report = _read_json(wb.settings.run_dir(run_id) / "report.json")
    if not report:
        return None
    variants = {name: report["variants"][name] for name in report.get("order", report["variants"])}  # the runner's order
    return {
        **report,
        "variants": variants,
        "chart": str(wb.settings.run_dir(run_id) / "ablation.png"),
        "markdown": str(wb.settings.run_dir(run_id) / "report.md"),
    }


def run_folder_of(path: Path) -> Path | None:
    """The run folder holding `path` (a run folder or a checkpoint inside one): config.json beside progress.json,
    as the trainer writes them."""
    path = path.resolve()
    return next((f for f in (path, *path.parents) if (f / "config.json").is_file() and (f / PROGRESS_FILE).is_file()), None)


def register_run(wb: Workbench, actor: Actor, path: Path) -> int | None:
    """Enter a run trained with `skinflow train` on one of this workbench's exports in the run registry, as if
    the Retrain button had started it: its held-out predictions count as evidence at once (trained-on images
    left out), its model versions are read as this run's, and it can be activated. The registry reaches the
    folder through runs/run-<id>, a link to it. Returns the run's id (the existing one when the folder is
    registered already, or was started by the app), or None, the suggestions then being an outside model's, for
    a run trained on an export from elsewhere, a run not finished (a checkpoint taken on the way) or a bare model
    folder."""
    require(actor, "admin", "register a training run")
    given = path.resolve()
    folder = run_folder_of(path)
    with wb.session() as s:
        for run in s.scalars(select(TrainingRun)):
            home = wb.settings.run_dir(run.id).resolve()
            if run.config.get("run_folder") == str(folder) or home == given or home in given.parents:
                return run.id
        if folder is None:  # a bare model folder: nothing says what it was trained on
            return None
        config, progress = _read_json(folder / "config.json"), read_progress(folder)
        export = Path(str(config.get("export") or "")).resolve()
        export_id = s.scalar(select(Export.id).where(Export.path == str(export))) if config.get("export") else None
        if export_id is None or progress is None or progress.status != "done":  # not ours, or not finished (a checkpoint of it)
            return None
        run = TrainingRun(
            export_id=export_id,
            preset=str(config.get("preset") or "custom")[:64],
            status="done",
            created_by=actor.id,
            config={"export_path": str(export), "run_folder": str(folder), "run_name": config.get("run_id") or folder.name},
            checkpoint_path=str(folder / "model"),
            finished_at=utcnow(),
        )
        s.add(run)
        s.flush()
        link = wb.settings.run_dir(run.id)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(folder, target_is_directory=True)
        run.metrics = metrics_summary(read_metrics(wb, run.id))
        audit.record(s, actor, "run.register", "training_run", run.id, folder=str(folder), export_id=export_id)
        return run.id
