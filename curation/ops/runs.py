"""Training runs launched from the workbench: "Retrain from curated data".

A run is a fresh `grpo` export snapshot (training never reads the live database) plus `skinflow train`
started as a detached process (its own session: closing the browser or restarting the app does not stop
it). The `training_runs` row records who, when, the export, the config, the pid, the status
(queued | running | done | failed | cancelled), the log, the checkpoint and the final metrics. The run
folder (<home>/runs/run-<id>/) is the trainer's: progress.json and metrics.jsonl are what this module reads.

`refresh_runs` reconciles rows with reality (the app calls it on every poll): a finished run becomes done
with its metrics; a run whose process died without finishing becomes failed, with the end of its log as the
reason; queued runs start when a slot is free (one at a time by default: WorkflowSettings.training_slots).
Cancelling asks the trainer to stop at the next step (a flag file: it saves a checkpoint and exits), and
terminates the process group if it has not stopped within CANCEL_GRACE_S.

One module on purpose: it is one lifecycle (queue, launch, reconcile, cancel, resume, activate) over one table
and one run folder; every function reads the statuses the others write. Starting and watching the processes
themselves is curation/ops/jobs.py.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import socket
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select

from curation.errors import NotFound, SkinflowError
from curation.export.dataset import export_dataset
from curation.export.splits import SPLITS
from curation.ops.jobs import is_alive, log_tail_of, python_module, spawn
from curation.ops.run_folders import metrics_summary, read_metrics
from curation.store import audit
from curation.store.auth import Actor, require
from curation.store.db import Workbench
from curation.store.models import Export, TrainingRun, User, utcnow
from curation.store.workflow import get_workflow_settings, update_workflow_settings
from schema.run_files import RunProgress, read_progress

CANCEL_GRACE_S = 60
PRESETS = ("tiny", "qwen2.5-vl-7b", "probe", "qwen2.5-vl-3b-lora", "qwen2.5-vl-7b-lora", "qwen2.5-vl-7b-qlora")
NO_ABLATION_PRESETS = ("probe",)  # no FDLinear and no stages: nothing for the variants to remove
# the variants of `skinflow ablate` (trainer/ablate.py VARIANTS; curation does not import the trainer)
ABLATION_VARIANTS = ("full", "no-fdlinear", "no-stage1", "baseline")
OVERRIDES = (
    "sft_epochs",
    "stage1_steps",
    "stage2_steps",
    "num_generations",
    "batch_size",
    "seed",
    "stages",
    "save_steps",
    "model",  # pretrained weights: the probe's CLIP/SigLIP image encoder, or the Qwen presets' model (a local folder)
)  # `skinflow train` flags


class RunError(SkinflowError):
    """A training run cannot be started, cancelled or activated."""


@dataclass(frozen=True)
class AblationRequest:
    """What a background `skinflow ablate` runs: the variants (two or more), seeds 0..N-1, the split scored."""

    seeds: int = 3
    variants: tuple[str, ...] = ABLATION_VARIANTS
    split: str = "test"


def budget_overrides(sft_epochs: int = 0, grpo_steps: int = 0) -> dict[str, int]:
    """The Train page's budget fields as `skinflow train` settings; 0 keeps the preset's value."""
    overrides = {"stage1_steps": grpo_steps, "stage2_steps": grpo_steps} if grpo_steps else {}
    if sft_epochs:
        overrides["sft_epochs"] = sft_epochs
    return overrides


@dataclass(frozen=True, kw_only=True)
class RunView:
    id: int
    preset: str
    status: str
    created_by: str | None
    created_at: Any
    finished_at: Any
    export_path: str | None
    run_dir: str
    log_path: str | None
    checkpoint_path: str | None
    metrics: dict[str, Any]
    error: str | None
    progress: RunProgress | None  # None until the trainer first writes it
    active: bool
    kind: str = "train"  # or "ablation"
    elsewhere: str | None = None  # the server the run belongs to, when it is not this one (this_server)


def runs_dir(wb: Workbench) -> Path:
    return wb.settings.runs_dir


def this_server(wb: Workbench) -> str:
    """Which server a run belongs to: its process and folder live on this machine, in this home. Several app
    servers share one database (docs/deploy.md); each starts, watches, cancels and activates only its own runs."""
    return f"{socket.gethostname()}:{wb.settings.home.resolve()}"


def _here(wb: Workbench, run: TrainingRun) -> bool:
    return run.config.get("server", this_server(wb)) == this_server(wb)  # runs from before servers were named: here


def _require_here(wb: Workbench, run: TrainingRun, what: str) -> None:
    if not _here(wb, run):
        raise RunError(
            f"run #{run.id} belongs to the server {run.config['server']} (its process and folder are there): {what} "
            "it from that server"
        )


def run_dir(wb: Workbench, run_id: int) -> Path:
    return wb.settings.run_dir(run_id)


def log_tail(wb: Workbench, run_id: int, lines: int = 40) -> str:
    with wb.session() as s:
        run = s.get(TrainingRun, run_id)
        path = run.log_path if run else None
    return "\n".join(log_tail_of(path, lines))


def _command(wb: Workbench, run: TrainingRun) -> list[str]:
    if run.config.get("kind") == "ablation":  # resumes by itself: finished variants are read back
        ablation = run.config["ablation"]
        command = [
            *python_module("app.cli"),
            "ablate",
            "--export",
            str(Path(run.config["export_path"]).resolve()),  # absolute: the job runs in runs/, not here
            "--preset",
            run.preset,
            "--out",
            str(run_dir(wb, run.id).resolve()),
            "--seeds",
            str(ablation["seeds"]),
            "--variants",
            ",".join(ablation["variants"]),
            "--split",
            ablation["split"],
        ]
    else:
        command = [
            *python_module("app.cli"),
            "train",
            "--export",
            str(Path(run.config["export_path"]).resolve()),
            "--preset",
            run.preset,
            "--runs",
            str(runs_dir(wb).resolve()),
            "--run-id",
            f"run-{run.id}",
        ]
        if run_dir(wb, run.id).exists():
            command.append("--resume")
    for key, value in sorted(run.config.get("overrides", {}).items()):
        command += [f"--{key.replace('_', '-')}", str(value)]
    return command


def _launch(wb: Workbench, run: TrainingRun) -> None:
    runs_dir(wb).mkdir(parents=True, exist_ok=True)
    log_path = runs_dir(wb) / f"run-{run.id}.log"
    process = spawn(_command(wb, run), log_path, {"PYTHONUNBUFFERED": "1", "TOKENIZERS_PARALLELISM": "false"})
    run.pid, run.status, run.log_path = process.pid, "running", str(log_path)
    run.checkpoint_path = None if run.config.get("kind") == "ablation" else str(run_dir(wb, run.id) / "model")


def _weights_folder(value: Any) -> Path:
    """A local folder of pretrained weights (config.json beside them): a background run cannot download, and a
    typo should fail here, not minutes later in the run's log."""
    folder = Path(str(value)).expanduser()
    if not (folder / "config.json").is_file():
        raise RunError(
            f"{value!r} is not a folder of pretrained weights (no config.json in it); give a local folder (for the probe: "
            "a CLIP or SigLIP checkpoint, e.g. saved with save_pretrained), or leave it empty for the preset's default"
        )
    return folder.resolve()


def start_training(
    wb: Workbench,
    actor: Actor,
    *,
    preset: str = "tiny",
    overrides: dict[str, Any] | None = None,
    ablation: AblationRequest | None = None,
) -> int:
    """Snapshot the verified data as a grpo export and queue a run on it; returns the run id. With `ablation`
    the run is `skinflow ablate` instead: the recipe's variants on the same snapshot, one report
    (ablation_report)."""
    require(actor, "admin", "start training runs")
    if preset not in PRESETS:
        raise RunError(f"unknown preset {preset!r}; use one of {', '.join(PRESETS)}")
    unknown = sorted(set(overrides or {}) - set(OVERRIDES))
    if unknown:
        raise RunError(f"unknown training setting(s) {unknown}; use: {', '.join(OVERRIDES)}")
    config: dict[str, Any] = {"overrides": dict(overrides or {})}
    if config["overrides"].get("model") is not None:
        config["overrides"]["model"] = str(_weights_folder(config["overrides"]["model"]))
    if ablation is not None:
        if preset in NO_ABLATION_PRESETS:
            raise RunError(f"the {preset} preset has no FDLinear layers or GRPO stages to ablate; ablate tiny or qwen2.5-vl-7b")
        config.update(kind="ablation", ablation=dataclasses.asdict(_check_ablation(ablation)))
        if {"seed", "stages"} & set(config["overrides"]):
            raise RunError("an ablation sets seeds and stages itself; leave them out")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    result = export_dataset(wb, actor, wb.settings.home / "exports" / f"train-{stamp}-{uuid.uuid4().hex[:6]}", formats=("grpo",))
    if ablation is not None and not result.by_split.get(config["ablation"]["split"]):
        raise RunError(
            f"the export has no verified {config['ablation']['split']!r} records to evaluate the variants on "
            f"({dict(result.by_split)}); verify more images or evaluate on another split"
        )
    with wb.session() as s:
        export_id = s.scalar(
            select(Export.id).where(Export.path == str(result.path.resolve())).order_by(Export.id.desc()).limit(1)
        )
        run = TrainingRun(
            export_id=export_id,
            preset=preset,
            status="queued",
            created_by=actor.id,
            config={"export_path": str(result.path), "server": this_server(wb), **config},
        )
        s.add(run)
        s.flush()
        audit.record(
            s,
            actor,
            "ablation.start" if ablation is not None else "run.start",
            "training_run",
            run.id,
            preset=preset,
            export=str(result.path),
            records=result.n_records,
        )
        run_id = run.id
    refresh_runs(wb)
    return run_id


def _check_ablation(request: AblationRequest) -> AblationRequest:
    variants = tuple(v for v in ABLATION_VARIANTS if v in request.variants)  # the report's order, reference first
    if len(variants) < len(set(request.variants)) or len(variants) < 2:
        raise RunError(f"an ablation needs two or more of {', '.join(ABLATION_VARIANTS)} (got {list(request.variants)})")
    if not 1 <= request.seeds <= 10:
        raise RunError(f"seeds must be between 1 and 10 (got {request.seeds})")
    if request.split not in SPLITS:
        raise RunError(f"split must be {', '.join(SPLITS)} (got {request.split!r})")
    return dataclasses.replace(request, variants=variants)


def refresh_runs(wb: Workbench) -> None:
    """Bring statuses up to date and start queued runs when a slot is free. Safe to call often."""
    slots = get_workflow_settings(wb).training_slots
    with wb.session() as s:
        mine = [r for r in s.scalars(select(TrainingRun).where(TrainingRun.status.in_(("running", "queued")))) if _here(wb, r)]
        for run in (r for r in mine if r.status == "running"):  # another server's run is that server's to watch
            folder = run_dir(wb, run.id)
            status = getattr(read_progress(folder), "status", None)
            alive = is_alive(run.pid, f"run-{run.id}")
            if status == "done":
                run.status, run.finished_at = "done", utcnow()
                run.metrics = metrics_summary(read_metrics(wb, run.id))
                run.checkpoint_path = None if run.config.get("kind") == "ablation" else str((folder / "model").resolve())
            elif status == "cancelled" and not alive:
                run.status, run.finished_at = "cancelled", utcnow()
                run.metrics = metrics_summary(read_metrics(wb, run.id))
            elif not alive:
                tail = log_tail_of(run.log_path)
                reason = next((line for line in reversed(tail) if line.startswith("error:")), None) or (
                    tail[-1] if tail else "no log"
                )
                run.status, run.finished_at = "failed", utcnow()
                run.error = f"the training process ended without finishing: {reason[:500]}"
            elif (folder / "cancel").exists() and time.time() - (folder / "cancel").stat().st_mtime > CANCEL_GRACE_S:
                try:
                    os.killpg(run.pid, signal.SIGTERM)  # did not stop at a step boundary in time
                except (ProcessLookupError, PermissionError):
                    pass
        s.flush()
        running = sum(r.status == "running" for r in mine)  # slots are this machine's
        for run in sorted((r for r in mine if r.status == "queued"), key=lambda r: r.id)[: max(slots - running, 0)]:
            _launch(wb, run)


def cancel_run(wb: Workbench, actor: Actor, run_id: int) -> str:
    """Stop a run gracefully (it keeps its last checkpoint and can be resumed); returns the new status."""
    require(actor, "admin", "cancel training runs")
    with wb.session() as s:
        run = s.get(TrainingRun, run_id)
        if run is None:
            raise NotFound(f"no training run #{run_id}")
        _require_here(wb, run, "cancel")
        if run.status == "queued":
            run.status, run.finished_at = "cancelled", utcnow()
        elif run.status == "running":
            folder = run_dir(wb, run_id)
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "cancel").write_text(f"cancelled by {actor.username}\n", encoding="utf-8")
        else:
            raise RunError(f"run #{run_id} is {run.status}; only queued or running runs can be cancelled")
        audit.record(s, actor, "run.cancel", "training_run", run_id)
        return run.status


def resume_run(wb: Workbench, actor: Actor, run_id: int) -> None:
    """Continue a failed or cancelled run from its last checkpoint (finished stages are not rerun): it is
    queued again and starts when a slot is free."""
    require(actor, "admin", "resume training runs")
    with wb.session() as s:
        run = s.get(TrainingRun, run_id)
        if run is None:
            raise NotFound(f"no training run #{run_id}")
        _require_here(wb, run, "resume")
        if run.status not in ("failed", "cancelled"):
            raise RunError(f"run #{run_id} is {run.status}; only a failed or cancelled run can be resumed")
        run.status, run.error, run.finished_at, run.pid = "queued", None, None, None
        audit.record(s, actor, "run.resume", "training_run", run_id)
    (run_dir(wb, run_id) / "cancel").unlink(missing_ok=True)
    refresh_runs(wb)


def list_runs(wb: Workbench) -> list[RunView]:
    refresh_runs(wb)
    active = get_workflow_settings(wb).active_run_id
    with wb.session() as s:
        rows = s.execute(
            select(TrainingRun, Export.path).outerjoin(Export, Export.id == TrainingRun.export_id).order_by(TrainingRun.id.desc())
        ).all()
        names = dict(s.execute(select(User.id, User.username)).all())
        return [
            RunView(
                id=r.id,
                preset=r.preset,
                status=r.status,
                created_by=names.get(r.created_by),
                created_at=r.created_at,
                finished_at=r.finished_at,
                export_path=r.config.get("export_path") or path,
                run_dir=str(run_dir(wb, r.id)),
                log_path=r.log_path,
                checkpoint_path=r.checkpoint_path,
                metrics=r.metrics or {},
                error=r.error,
                progress=read_progress(run_dir(wb, r.id)),
                active=r.id == active,
                kind=r.config.get("kind", "train"),
                elsewhere=None if _here(wb, r) else r.config["server"],
            )
            for r, path in rows
        ]


def activate_run(wb: Workbench, actor: Actor, run_id: int, *, suggest: bool = True) -> int | None:
    """Make a finished run's model the active one and (by default) start `skinflow suggest` with it in the
    background: predictions for every image that still needs work, imported as model drafts. Returns the pid."""
    require(actor, "admin", "activate a model")
    with wb.session() as s:
        run = s.get(TrainingRun, run_id)
        if run is None:
            raise NotFound(f"no training run #{run_id}")
        _require_here(wb, run, "activate")
        if run.status != "done":
            raise RunError(f"run #{run_id} is {run.status}; only a finished run can be activated")
        if run.config.get("kind") == "ablation":
            raise RunError(f"run #{run_id} is an ablation (several models, one report); activate a training run instead")
    update_workflow_settings(wb, actor, active_run_id=run_id)
    if not suggest:
        return None
    log_path = runs_dir(wb) / f"run-{run_id}-suggest.log"
    command = [
        *python_module("app.cli"),
        "--home",
        str(wb.settings.home.resolve()),
        "--user",
        actor.username,
        "suggest",
        "--checkpoint",
        str(run_dir(wb, run_id).resolve()),
    ]
    return spawn(command, log_path, wb.settings.child_environ()).pid
