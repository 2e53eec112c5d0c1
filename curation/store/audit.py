"""The audit trail: every mutation writes one event naming the acting user, in the same transaction."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy.orm import Session

from curation.store.models import AuditEvent

if TYPE_CHECKING:
    from curation.store.auth import Actor


def record(session: Session, actor: Actor | None, action: str, entity: str, entity_id: int | None = None, **payload: Any) -> None:
    session.add(
        AuditEvent(
            user_id=actor.id if actor else None,
            username=actor.username if actor else "system",
            action=action,
            entity=entity,
            entity_id=entity_id,
            payload=payload,
        )
    )
