"""Accounts and roles. Roles are checked inside each curation function (`require`), not only in the UI.

Roles are ordered: annotator < reviewer < admin; a role may do everything the roles below it may.
Passwords are hashed with argon2id (argon2-cffi defaults).
"""

from __future__ import annotations

import re
import secrets
import unicodedata
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import delete, func, or_, select, text, update

from curation.errors import ConflictError, NotFound, PermissionDenied, SkinflowError
from curation.store import audit
from curation.store.models import ROLES, AuditEvent, LoginAttempt, LoginSession, User, utcnow

ROLE_RANK = {role: rank for rank, role in enumerate(ROLES)}
MIN_PASSWORD_CHARS = 8
_USERNAME = re.compile(r"^[a-z0-9][a-z0-9._-]{1,63}$")
_hasher = PasswordHasher()


class InvalidCredentials(SkinflowError):
    """Wrong username or password (deliberately not saying which)."""


@dataclass(frozen=True)
class Actor:
    """Who is acting: passed to every curation function."""

    id: int
    username: str
    role: str
    credentials_version: int = 0  # the account's version when this Actor was made (see current_account)

    def can(self, role: str) -> bool:
        return ROLE_RANK[self.role] >= ROLE_RANK[role]


def require(actor: Actor, role: str, action: str) -> None:
    if not actor.can(role):
        raise PermissionDenied(f"user {actor.username!r} ({actor.role}) cannot {action}: it needs the {role} role; ask an admin")


def _check_role(role: str) -> str:
    if role not in ROLE_RANK:
        raise SkinflowError(f"unknown role {role!r}; use one of: {', '.join(ROLES)}")
    return role


def _check_username(username: str) -> str:
    name = username.strip().lower()
    if not _USERNAME.match(name):
        raise SkinflowError(f"invalid username {username!r}: use 2-64 characters, lower-case letters, digits, '.', '_' or '-'")
    return name


def _check_password(password: str) -> str:
    if len(password) < MIN_PASSWORD_CHARS:
        raise SkinflowError(f"password too short: use at least {MIN_PASSWORD_CHARS} characters")
    return password


def generate_password() -> str:
    return secrets.token_urlsafe(12)


def _actor(user: User) -> Actor:
    return Actor(id=user.id, username=user.username, role=user.role, credentials_version=user.credentials_version or 0)


def current_account(wb, actor: Actor) -> Actor | None:
    """The account as it is now, or None when it changed since `actor` was made: deactivated, or its role or
    password changed (each bumps credentials_version). The app calls this on every request, so a demoted
    admin loses admin pages at the next click and a password change ends every other open session."""
    with wb.session() as s:
        user = s.get(User, actor.id)
        if user is None or not user.active or (user.credentials_version or 0) != actor.credentials_version:
            return None
        return _actor(user)


def count_users(wb) -> int:
    with wb.session() as s:
        return s.scalar(select(func.count(User.id))) or 0


def add_user(
    wb,
    actor: Actor | None,
    username: str,
    role: str,
    password: str | None = None,
    display_name: str = "",
    email: str | None = None,
) -> tuple[Actor, str]:
    """Create an account; returns it and its password (generated when not given).
    `actor` may be None only to create the very first account, which must be an admin."""
    name, role = _check_username(username), _check_role(role)
    address = _check_email(email) if email else None
    password = _check_password(password) if password is not None else generate_password()
    with wb.session() as s:
        if actor is None:
            if s.scalar(select(func.count(User.id))):
                raise PermissionDenied("accounts exist already: an admin must create new ones")
            if role != "admin":
                raise SkinflowError("the first account must be an admin")
        else:
            require(actor, "admin", "create accounts")
        if s.scalar(select(User.id).where(User.username == name)) is not None:
            raise ConflictError(f"user {name!r} exists already; pick another name or use `skinflow users set-role`")
        if address and s.scalar(select(User.id).where(User.email == address)) is not None:
            raise ConflictError(f"{address} belongs to another account already; one address maps to one account")
        user = User(
            username=name, role=role, password_hash=_hasher.hash(password), display_name=display_name or name, email=address
        )
        s.add(user)
        s.flush()
        audit.record(s, actor or _actor(user), "user.add", "user", user.id, username=name, role=role)
        return _actor(user), password


def get_actor(wb, username: str) -> Actor:
    with wb.session() as s:
        user = s.scalar(select(User).where(User.username == username.strip().lower()))
        if user is None or not user.active:
            raise NotFound(f"no active user {username!r}; see `skinflow users list`")
        return _actor(user)


def sole_admin(wb) -> Actor:
    """The only active admin: who a local command acts as when nobody is named."""
    with wb.session() as s:
        admins = s.scalars(select(User).where(User.role == "admin", User.active).order_by(User.username)).all()
    if len(admins) != 1:
        names = ", ".join(a.username for a in admins) or "none"
        raise SkinflowError(f"cannot tell who acts (admins: {names}): name the account with --user NAME or SKINFLOW_USER")
    return _actor(admins[0])


def list_users(wb, actor: Actor) -> list[dict]:
    require(actor, "reviewer", "list accounts")
    with wb.session() as s:
        return [
            {"username": u.username, "role": u.role, "active": u.active, "email": u.email, "created_at": u.created_at}
            for u in s.scalars(select(User).order_by(User.username))
        ]


def _end_sessions(s, user: User) -> None:
    """A role, password or access change ends the account's open sessions: the app checks credentials_version
    on every request, and login sessions (sessions.py) opened before are revoked."""
    user.credentials_version = (user.credentials_version or 0) + 1
    s.execute(
        update(LoginSession).where(LoginSession.user_id == user.id, LoginSession.revoked_at.is_(None)).values(revoked_at=utcnow())
    )


_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def normalise_email(email: str) -> str:
    """The form an address is stored and compared in: NFKC, then casefolded. An address that NFKC changes is
    refused: lowercasing folded the Kelvin sign (U+212A) into a "k", so "\u212aate@..." logged in as kate@..."""
    address = email.strip()
    if unicodedata.normalize("NFKC", address) != address:
        raise InvalidCredentials(
            f"{address!r} holds characters that change under Unicode normalisation (look-alike letters); use the plain address"
        )
    return address.casefold()


def _check_email(email: str) -> str:
    try:
        address = normalise_email(email)
    except InvalidCredentials as e:
        raise SkinflowError(str(e)) from None
    if len(address) > 320 or not _EMAIL.match(address):
        raise SkinflowError(f"{email!r} is not an email address (name@hospital.org)")
    return address


def set_email(wb, actor: Actor, username: str, email: str | None) -> None:
    """The address single sign-on maps to this account (None: local login only). Ends the account's sessions:
    whoever could log in as it may have changed."""
    require(actor, "admin", "set email addresses")
    address = _check_email(email) if email else None
    with wb.session() as s:
        user = s.scalar(select(User).where(User.username == username.strip().lower()))
        if user is None:
            raise NotFound(f"no user {username!r}; see `skinflow users list`")
        if address and s.scalar(select(User.username).where(User.email == address, User.id != user.id)):
            raise ConflictError(f"{address} belongs to another account already; one address maps to one account")
        user.email = address
        _end_sessions(s, user)
        audit.record(s, actor, "user.set_email", "user", user.id, username=user.username, email=address)


def account_for_email(wb, email: Any, *, verified: Any = None) -> Actor:
    """The local account single sign-on maps an identity to: by the email the identity provider vouches for.
    Only an `email_verified` claim that is exactly true counts as vouching: a missing claim, or the string
    "false" (truthy), was taken for a yes. Refused too: an address that Unicode normalisation changes, and one
    no active account has."""
    if not email or not isinstance(email, str):
        raise InvalidCredentials("the identity provider sent no email address; ask your IT to release the email claim")
    if verified is not True:
        raise InvalidCredentials(
            f"the identity provider has not said it verified {email} (email_verified is {verified!r}, not true); "
            "verify the address there, or ask your IT to release the email_verified claim"
        )
    address = normalise_email(email)
    with wb.session() as s:
        user = s.scalar(select(User).where(User.email == address, User.active))
    if user is None:
        raise InvalidCredentials(
            f"no active account has the email {email}; ask an admin to run `skinflow users set-email NAME {email}`"
        )
    return _actor(user)


def set_role(wb, actor: Actor, username: str, role: str) -> None:
    require(actor, "admin", "change roles")
    _check_role(role)
    with wb.session() as s:
        user = s.scalar(select(User).where(User.username == username.strip().lower()))
        if user is None:
            raise NotFound(f"no user {username!r}; see `skinflow users list`")
        if user.role == "admin" and role != "admin":
            admins = s.scalar(select(func.count(User.id)).where(User.role == "admin", User.active))
            if admins <= 1:
                raise ConflictError("this is the last admin: make another admin first")
        old = user.role
        user.role = role
        _end_sessions(s, user)
        audit.record(s, actor, "user.set_role", "user", user.id, username=user.username, old=old, new=role)


def set_password(wb, actor: Actor, username: str, password: str | None = None) -> str:
    """Admins set anyone's password; others only their own. Returns the (possibly generated) password."""
    name = username.strip().lower()
    if name != actor.username:
        require(actor, "admin", "set another user's password")
    password = _check_password(password) if password is not None else generate_password()
    with wb.session() as s:
        user = s.scalar(select(User).where(User.username == name))
        if user is None:
            raise NotFound(f"no user {username!r}; see `skinflow users list`")
        user.password_hash = _hasher.hash(password)
        _end_sessions(s, user)
        _forget_failures(s, name)  # a new password unlocks the account (the lock message says to ask for one)
        audit.record(s, actor, "user.set_password", "user", user.id, username=name)
    return password


MAX_FAILED_LOGINS = 5  # per (account, client address) within FAILED_LOGIN_WINDOW; then that address waits
FAILED_LOGIN_WINDOW = timedelta(minutes=15)
LOCAL_CLIENT = "local"  # the address of a login Streamlit cannot tell (localhost), and of logins with none given


def _claim_attempt(s, name: str, client: str, now: datetime) -> LoginAttempt:
    """Record a login attempt and check the throttle in one transaction, before any password is checked:
    parallel guesses are counted one after another (SQLite: the insert takes the write lock; PostgreSQL: a
    per-name advisory lock), so at most MAX_FAILED_LOGINS of them are ever verified. Counted per (account,
    address), so five wrong guesses from one address lock out that address, not the account's owner."""
    if s.get_bind().dialect.name == "postgresql":
        s.execute(text("SELECT pg_advisory_xact_lock(hashtext(:name))"), {"name": f"login:{name}"})
    attempt = LoginAttempt(username=name, client=client, at=now, succeeded=None)
    s.add(attempt)
    s.flush()
    counted = s.scalars(
        select(LoginAttempt.at)
        .where(
            LoginAttempt.username == name,
            LoginAttempt.client == client,
            LoginAttempt.at > now - FAILED_LOGIN_WINDOW,
            LoginAttempt.id != attempt.id,
            or_(LoginAttempt.succeeded.is_(False), LoginAttempt.succeeded.is_(None)),  # failed, or being checked
        )
        .order_by(LoginAttempt.at)
    ).all()
    if len(counted) >= MAX_FAILED_LOGINS:
        first = counted[-MAX_FAILED_LOGINS]
        first = first if first.tzinfo else first.replace(tzinfo=UTC)
        wait = max(1, int(((first + FAILED_LOGIN_WINDOW) - now).total_seconds() // 60) + 1)
        # raising rolls this attempt back: a refused attempt does not extend the wait
        raise InvalidCredentials(
            f"too many failed logins for this account from here; try again in {wait} minute(s), or ask an admin to "
            f"unlock it (Admin page, or `skinflow users unlock {name}`)"
        )
    return attempt


def unlock(wb, actor: Actor, username: str) -> int:
    """Forget the account's failed logins (every address), so it may log in at once; returns how many were
    forgotten. Setting a password does this too."""
    require(actor, "admin", "unlock accounts")
    name = username.strip().lower()
    with wb.session() as s:
        if s.scalar(select(User.id).where(User.username == name)) is None:
            raise NotFound(f"no user {username!r}; see `skinflow users list`")
        forgotten = _forget_failures(s, name)
        audit.record(s, actor, "user.unlock", "user", None, username=name, failures=forgotten)
    return forgotten


def _forget_failures(s, name: str) -> int:
    failed = delete(LoginAttempt).where(LoginAttempt.username == name, LoginAttempt.succeeded.is_not(True))
    return s.execute(failed).rowcount or 0


def authenticate(wb, username: str, password: str, *, client: str | None = None, now: datetime | None = None) -> Actor:
    """The account for these credentials. Failed attempts are audited (`auth.failed`); after
    MAX_FAILED_LOGINS of them within FAILED_LOGIN_WINDOW from one `client` address, the account refuses logins
    from that address, even with the right password, until the window has passed or an admin unlocks it (a
    throttle against password guessing that a guesser cannot turn against the account's owner). Unknown names
    cost the same work and are throttled the same way. Attempts are counted before their password is checked
    (_claim_attempt), so parallel guesses cannot slip past the count."""
    name = username.strip().lower()[:64]
    client = (client or LOCAL_CLIENT)[:64]
    now = now or utcnow()
    with wb.session() as s:
        attempt_id = _claim_attempt(s, name, client, now).id
    with wb.session() as s:
        user = s.scalar(select(User).where(User.username == name))
        ok = user is not None and user.active
        if not ok:
            _hasher.hash(password)  # same work either way: no timing hint that the name exists
        else:
            try:
                _hasher.verify(user.password_hash, password)
            except (VerificationError, InvalidHashError):
                ok = False
        s.get(LoginAttempt, attempt_id).succeeded = ok
        if ok:
            return _actor(user)
        # recorded under the name tried (no user id): a throttle for unknown names too
        s.add(
            AuditEvent(
                user_id=None, username=name, action="auth.failed", entity="user", entity_id=None, payload={}, created_at=now
            )
        )
    raise InvalidCredentials("wrong username or password")
