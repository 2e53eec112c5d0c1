"""Login sessions that survive a browser reload.

Streamlit keeps a session per browser tab and forgets it on a reload. A login therefore also opens a row here
and hands the browser a cookie holding a random 256-bit token; only the token's sha256 is stored, so a copy of
the database opens no session. A reload presents the cookie and resumes the session while it is unexpired,
not revoked (logout), and the account is active with the same credentials_version (a role or password change
ends every session of the account). A resumed session keeps its expiry: a reload does not extend it.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, select, update

from curation.store.auth import Actor
from curation.store.models import LoginSession, User, utcnow

TOKEN_BYTES = 32
KEEP_ENDED_DAYS = 7  # ended sessions are kept this long (for the record), then deleted at the next login


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)  # SQLite returns naive UTC


def open_session(wb, actor: Actor, minutes: int, *, now: datetime | None = None) -> tuple[str, datetime]:
    """(token for the cookie, expiry) of a new session for a freshly authenticated account."""
    now = now or utcnow()
    token = secrets.token_urlsafe(TOKEN_BYTES)
    expires = now + timedelta(minutes=minutes)
    with wb.session() as s:
        s.execute(delete(LoginSession).where(LoginSession.expires_at < now - timedelta(days=KEEP_ENDED_DAYS)))
        s.add(
            LoginSession(
                user_id=actor.id,
                token_sha256=_digest(token),
                credentials_version=actor.credentials_version,
                created_at=now,
                expires_at=expires,
            )
        )
    return token, expires


def resume_session(wb, token: str | None, *, now: datetime | None = None) -> tuple[Actor, datetime] | None:
    """(account, expiry) of the session this cookie token opens, or None: unknown token, expired, revoked, or
    the account deactivated or changed (role, password) since the session was opened."""
    if not token or len(token) > 256:
        return None
    now = now or utcnow()
    with wb.session() as s:
        row = s.execute(
            select(LoginSession, User)
            .join(User, User.id == LoginSession.user_id)
            .where(LoginSession.token_sha256 == _digest(token))
        ).first()
        if row is None:
            return None
        session, user = row
        if (
            session.revoked_at is not None
            or _aware(session.expires_at) <= now
            or not user.active
            or (user.credentials_version or 0) != session.credentials_version
        ):
            return None
        actor = Actor(id=user.id, username=user.username, role=user.role, credentials_version=user.credentials_version or 0)
        return actor, _aware(session.expires_at)


def close_session(wb, token: str | None, *, now: datetime | None = None) -> None:
    """Logout: the cookie's session is revoked (a copy of the cookie opens nothing afterwards)."""
    if not token:
        return
    with wb.session() as s:
        s.execute(
            update(LoginSession)
            .where(LoginSession.token_sha256 == _digest(token), LoginSession.revoked_at.is_(None))
            .values(revoked_at=now or utcnow())
        )


def revoke_all_sessions(session, *, now: datetime | None = None) -> int:
    """End every open login session (within the caller's transaction); returns how many. A restore does this:
    the backup holds the session rows as they were, so a cookie revoked by a logout since would work again."""
    result = session.execute(update(LoginSession).where(LoginSession.revoked_at.is_(None)).values(revoked_at=now or utcnow()))
    return result.rowcount or 0
