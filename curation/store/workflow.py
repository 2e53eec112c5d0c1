"""Workflow settings an admin changes in the app: stored in the database (table `settings`), so
every process (app, CLI, background jobs) sees the same values. Environment and TOML settings
(curation/store/settings.py) are for how the workbench runs; these are for how the team works."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy import select

from curation.errors import SkinflowError
from curation.store import audit
from curation.store.auth import Actor, require
from curation.store.db import Workbench
from curation.store.models import Setting, utcnow

QUEUE_STRATEGIES = ("sequential", "random", "uncertainty", "disagreement", "fitzpatrick_balance")


class WorkflowSettings(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    overlap: int = Field(1, ge=1, le=10, description="annotators per image")
    lease_minutes: int = Field(
        30, ge=1, le=24 * 60, description="how long an image stays reserved for the annotator it was served to"
    )
    queue_strategy: Literal["sequential", "random", "uncertainty", "disagreement", "fitzpatrick_balance"] = "sequential"
    gold_rate: float = Field(
        0.05, ge=0.0, le=0.5, description="share of served items that are verified records (gold), unannounced"
    )
    disagreement_threshold: float = Field(
        0.8, ge=0.0, le=1.0, description="a field score below this between two annotators sends the item to review"
    )
    session_minutes: int = Field(8 * 60, ge=5, le=7 * 24 * 60, description="a login expires after this long")
    training_slots: int = Field(1, ge=1, le=8, description="training runs at once; more wait in the queue")
    active_run_id: int | None = Field(None, description="the training run whose model makes the suggestions")
    min_evidence: int = Field(
        20, ge=1, le=100_000, description="held-out items a draft source needs on a field before it counts as best there"
    )


def get_workflow_settings(wb: Workbench) -> WorkflowSettings:
    with wb.session() as s:
        stored = {key: value for key, value in s.execute(select(Setting.key, Setting.value))}
    return WorkflowSettings(**stored)


def update_workflow_settings(wb: Workbench, actor: Actor, **changes) -> WorkflowSettings:
    require(actor, "admin", "change workflow settings")
    current = get_workflow_settings(wb)
    unknown = set(changes) - set(WorkflowSettings.model_fields)
    if unknown:
        raise SkinflowError(f"unknown settings {sorted(unknown)}; known: {', '.join(WorkflowSettings.model_fields)}")
    try:
        updated = WorkflowSettings(**{**current.model_dump(), **changes})
    except ValidationError as e:
        problems = "; ".join(f"{err['loc'][0]}: {err['msg']}" for err in e.errors())
        raise SkinflowError(f"invalid settings: {problems}") from None
    with wb.session() as s:
        for key, value in changes.items():
            value = getattr(updated, key)
            row = s.get(Setting, key)
            if row is None:
                s.add(Setting(key=key, value=value))
            else:
                row.value, row.updated_at = value, utcnow()
        audit.record(s, actor, "settings.update", "settings", None, changes={k: getattr(updated, k) for k in changes})
    return updated
