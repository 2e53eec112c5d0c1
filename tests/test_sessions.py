"""Login sessions that survive a browser reload: the cookie token, its expiry, revocation and account changes."""

from __future__ import annotations

import hashlib
from datetime import timedelta

import pytest
from sqlalchemy import select, text

from curation.store.auth import add_user, set_password, set_role
from curation.store.models import LoginSession, User, utcnow
from curation.store.sessions import close_session, open_session, resume_session

pytestmark = pytest.mark.database  # run again on PostgreSQL by `make test-postgres`


def test_a_session_resumes_with_its_token_until_it_expires(wb, admin, annotator):
    now = utcnow()
    token, expires = open_session(wb, annotator, 60, now=now)
    assert expires == now + timedelta(minutes=60) and len(token) >= 43  # 256 random bits
    actor, until = resume_session(wb, token, now=now + timedelta(minutes=59))
    assert actor == annotator and until == expires  # a reload does not extend the session
    assert resume_session(wb, token, now=now + timedelta(minutes=60)) is None  # expired
    other, _ = open_session(wb, annotator, 60, now=now)
    assert other != token  # every login gets its own token


def test_only_the_hash_of_the_token_is_stored(wb, annotator):
    token, _ = open_session(wb, annotator, 60)
    with wb.engine.connect() as c:
        dump = "\n".join(str(row) for row in c.execute(text("SELECT * FROM login_sessions")))
    assert token not in dump and hashlib.sha256(token.encode()).hexdigest() in dump


def test_wrong_tampered_or_absurd_tokens_open_nothing(wb, annotator):
    token, _ = open_session(wb, annotator, 60)
    for bad in ("", None, "x" * 43, token[:-1] + ("A" if token[-1] != "A" else "B"), token + "x", "é" * 5000):
        assert resume_session(wb, bad) is None, bad


def test_logout_revokes_the_session_and_only_that_one(wb, annotator):
    first, _ = open_session(wb, annotator, 60)
    second, _ = open_session(wb, annotator, 60)  # another browser
    close_session(wb, first)
    assert resume_session(wb, first) is None  # a copied cookie is worthless after logout
    assert resume_session(wb, second)[0] == annotator


def test_a_role_or_password_change_or_deactivation_ends_every_session_of_the_account(wb, admin):
    user, _ = add_user(wb, admin, "alice", "reviewer", "alice-password")
    bystander, _ = add_user(wb, admin, "bob", "annotator", "bob-password-1")
    token, _ = open_session(wb, user, 60)
    kept, _ = open_session(wb, bystander, 60)
    set_role(wb, admin, "alice", "annotator")
    assert resume_session(wb, token) is None
    with wb.session() as s:
        assert s.scalar(select(LoginSession.revoked_at).where(LoginSession.user_id == user.id)) is not None
    from curation.store.auth import get_actor

    token, _ = open_session(wb, get_actor(wb, "alice"), 60)
    set_password(wb, admin, "alice", "a-new-password")
    assert resume_session(wb, token) is None
    token, _ = open_session(wb, get_actor(wb, "alice"), 60)
    with wb.session() as s:
        s.scalar(select(User).where(User.username == "alice")).active = False
    assert resume_session(wb, token) is None
    assert resume_session(wb, kept)[0] == bystander  # other accounts keep theirs


def test_long_ended_sessions_are_cleared_at_the_next_login(wb, annotator):
    now = utcnow()
    old, _ = open_session(wb, annotator, 60, now=now - timedelta(days=30))
    open_session(wb, annotator, 60, now=now)
    with wb.session() as s:
        assert (
            s.scalar(select(LoginSession.id).where(LoginSession.token_sha256 == hashlib.sha256(old.encode()).hexdigest())) is None
        )
        assert len(s.scalars(select(LoginSession)).all()) == 1


def test_single_sign_on_maps_a_verified_email_to_one_active_account(wb, admin):
    import pytest

    from curation.errors import ConflictError
    from curation.store.auth import InvalidCredentials, account_for_email, set_email
    from schema.errors import SkinflowError

    user, _ = add_user(wb, admin, "alice", "reviewer", "alice-password", email="Alice@Hospital.org")
    assert account_for_email(wb, "alice@hospital.ORG", verified=True) == user  # addresses compare without case
    # only a claim that is exactly true vouches for the address: missing, false, or the truthy string "false" do not
    for claim in (None, False, "false", "true", 1):
        with pytest.raises(InvalidCredentials, match="has not said it verified"):
            account_for_email(wb, "alice@hospital.org", verified=claim)
    with pytest.raises(InvalidCredentials, match="skinflow users set-email NAME bob@hospital.org"):
        account_for_email(wb, "bob@hospital.org", verified=True)
    # the Kelvin sign (U+212A) lowercases to "k": kate@ must not be reachable through it, at login or at storage
    add_user(wb, admin, "kate", "annotator", "kate-password-1", email="kate@hospital.org")
    with pytest.raises(InvalidCredentials, match="change under Unicode normalisation"):
        account_for_email(wb, "\u212aate@hospital.org", verified=True)
    with pytest.raises(SkinflowError, match="change under Unicode normalisation"):
        set_email(wb, admin, "alice", "\u212aate@hospital.org")
    with pytest.raises(SkinflowError, match="change under Unicode normalisation"):
        add_user(wb, admin, "kate2", "annotator", "kate-password-1", email="ｋate@hospital.org")  # a full-width k
    with pytest.raises(InvalidCredentials, match="no email"):
        account_for_email(wb, None)
    with pytest.raises(ConflictError, match="another account"):
        add_user(wb, admin, "alice2", "annotator", "alice-password", email="alice@hospital.org")
    with pytest.raises(SkinflowError, match="not an email address"):
        set_email(wb, admin, "alice", "alice at hospital")
    token, _ = open_session(wb, user, 60)
    set_email(wb, admin, "alice", None)  # local login only from now on: open sessions end too
    assert resume_session(wb, token) is None
    with pytest.raises(InvalidCredentials):
        account_for_email(wb, "alice@hospital.org", verified=True)
