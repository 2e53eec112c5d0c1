import pytest
from sqlalchemy import select

from curation.assist import drafting, drafts, weights
from curation.errors import ConflictError, PermissionDenied
from curation.export import dataset as export
from curation.ingest import archive, csv_import, fetch, folder
from curation.labelling import annotate, browse, queue, review
from curation.ops import demo, maintenance
from curation.store import auth, workflow
from curation.store.models import AuditEvent, User
from schema import Caption

pytestmark = pytest.mark.database  # run again on PostgreSQL by `make test-postgres`


def test_passwords_are_argon2_hashes_and_verify(wb, admin):
    with wb.session() as s:
        stored = s.scalar(select(User.password_hash).where(User.username == "admin"))
    assert stored.startswith("$argon2id$") and "admin-password" not in stored
    assert auth.authenticate(wb, "admin", "admin-password").role == "admin"
    with pytest.raises(auth.InvalidCredentials):
        auth.authenticate(wb, "admin", "wrong-password")
    with pytest.raises(auth.InvalidCredentials):
        auth.authenticate(wb, "nobody", "whatever-pw")


def test_first_account_must_be_admin_and_later_ones_need_an_admin(wb):
    with pytest.raises(Exception, match="first account must be an admin"):
        auth.add_user(wb, None, "alice", "annotator")
    first, _ = auth.add_user(wb, None, "boss", "admin")
    with pytest.raises(PermissionDenied):
        auth.add_user(wb, None, "sneaky", "admin")
    annotator, _ = auth.add_user(wb, first, "ann", "annotator")
    with pytest.raises(PermissionDenied, match="needs the admin role"):
        auth.add_user(wb, annotator, "x2", "annotator")


@pytest.mark.parametrize("name", ["A", "has space", "x" * 70, "émile"])
def test_bad_usernames_and_short_passwords_are_refused(wb, admin, name):
    with pytest.raises(Exception, match="invalid username"):
        auth.add_user(wb, admin, name, "annotator")
    with pytest.raises(Exception, match="too short"):
        auth.add_user(wb, admin, "okname", "annotator", "short")


def test_last_admin_cannot_be_demoted(wb, admin):
    with pytest.raises(ConflictError, match="last admin"):
        auth.set_role(wb, admin, "admin", "reviewer")


def test_every_mutation_writes_an_audit_event_naming_the_user(wb, admin, annotator):
    auth.set_role(wb, admin, "ann", "reviewer")
    auth.set_password(wb, admin, "ann", "new-password-1")
    with wb.session() as s:
        events = s.execute(select(AuditEvent.username, AuditEvent.action)).all()
    assert ("admin", "user.set_role") in events and ("admin", "user.set_password") in events
    assert ("admin", "user.add") in events


def _calls(wb, tmp_path, image_id):
    caption = Caption(color=["red"])
    return {
        "annotator": [
            lambda a: annotate.submit_annotation(wb, a, image_id, caption, diagnosis="psoriasis", diagnosis_status="confirmed"),
            lambda a: annotate.save_work(wb, a, image_id, {"caption": {}}),
            lambda a: queue.next_item(wb, a),
            lambda a: queue.skip(wb, a, image_id),
        ],
        "reviewer": [
            lambda a: annotate.review_annotation(wb, a, 10**6, "verified"),  # the role check comes before the lookup
            lambda a: annotate.adjudicate(wb, a, image_id, caption, diagnosis="psoriasis"),
            lambda a: auth.list_users(wb, a),
            lambda a: review.review_items(wb, a),
            lambda a: browse.list_images(wb, a),
            lambda a: browse.image_history(wb, a, image_id),
        ],
        "admin": [
            lambda a: auth.add_user(wb, a, f"u{a.id}x", "annotator"),
            lambda a: auth.set_role(wb, a, "ann", "annotator"),
            lambda a: auth.set_password(wb, a, "admin", "another-pass"),  # self-service is allowed; others need admin
            lambda a: folder.import_folder(wb, a, tmp_path),
            lambda a: csv_import.import_csv(wb, a, tmp_path / "none.csv"),
            lambda a: fetch.fetch_images(wb, a),
            lambda a: drafts.add_draft(wb, a, image_id, kind="synthetic", producer="t", version="1", caption=caption),
            lambda a: export.export_dataset(wb, a, tmp_path / "exp"),
            lambda a: maintenance.backup(wb, a, tmp_path / "b.db"),
            lambda a: maintenance.doctor(wb, a),
            lambda a: archive.import_zip(wb, a, tmp_path / "none.zip"),
            lambda a: workflow.update_workflow_settings(wb, a, gold_rate=0.0),
            lambda a: drafts.add_drafts(wb, a, [drafts.NewDraft(image_id, "llm", "m", "1", error="x")]),
            lambda a: drafting.draft_images(wb, a, model="m"),
            lambda a: drafting.recent_failures(wb, a),
            lambda a: weights.collect_reasonings(wb, a, model="m"),
            lambda a: weights.add_reasoning(wb, a, image_id, text="brown", producer="m", prompt_version="reasoning-v1"),
            lambda a: weights.create_weight_set(wb, a),
            lambda a: weights.activate_weight_set(wb, a, 1),
            lambda a: demo.build_demo(wb, a, n=1),
        ],
    }


def test_role_matrix_every_mutating_function_checks_the_role(wb, tmp_path, admin, reviewer, annotator):
    from curation.store.models import Image

    with wb.session() as s:
        image = Image(source="test", status="pending", sha256="0" * 64)
        s.add(image)
        s.flush()
        image_id = image.id
    ranks = {"annotator": 0, "reviewer": 1, "admin": 2}
    actors = {"annotator": annotator, "reviewer": reviewer, "admin": admin}
    for needed, calls in _calls(wb, tmp_path, image_id).items():
        for call in calls:
            for role, actor in actors.items():
                if ranks[role] < ranks[needed]:
                    with pytest.raises(PermissionDenied):
                        call(actor)
                else:
                    try:
                        call(actor)
                    except PermissionDenied:  # pragma: no cover - the assertion below reports it
                        pytest.fail(f"{role} was refused an action needing {needed}")
                    except Exception:  # noqa: BLE001 - other errors (missing files, no data) are fine: the role check passed
                        pass


def test_failed_logins_are_throttled_per_account_and_audited(wb, admin):
    from datetime import timedelta

    from sqlalchemy import func, select

    from curation.store.models import AuditEvent, utcnow

    start = utcnow()
    for minute in range(auth.MAX_FAILED_LOGINS):
        with pytest.raises(auth.InvalidCredentials, match="wrong username or password"):
            auth.authenticate(wb, "admin", f"guess-number-{minute}", now=start + timedelta(minutes=minute))
    later = start + timedelta(minutes=auth.MAX_FAILED_LOGINS)
    with pytest.raises(auth.InvalidCredentials, match="too many failed logins"):
        auth.authenticate(wb, "admin", "admin-password", now=later)  # even the right password waits
    with wb.session() as s:
        assert (
            s.scalar(select(func.count()).select_from(AuditEvent).where(AuditEvent.action == "auth.failed"))
            == auth.MAX_FAILED_LOGINS
        )
    assert (
        auth.authenticate(wb, "admin", "admin-password", now=start + auth.FAILED_LOGIN_WINDOW + timedelta(minutes=1)).role
        == "admin"
    )
    for _ in range(auth.MAX_FAILED_LOGINS):  # unknown names are throttled too, without revealing anything
        with pytest.raises(auth.InvalidCredentials, match="wrong username or password"):
            auth.authenticate(wb, "ghost", "whatever-pw", now=later)
    with pytest.raises(auth.InvalidCredentials, match="too many"):
        auth.authenticate(wb, "ghost", "whatever-pw", now=later)


def test_a_guesser_locks_out_only_their_own_address_and_an_admin_can_unlock(wb, admin):
    """Five wrong guesses from one address used to lock the account for everyone, its owner included, and neither
    a new password nor anything else undid it (though the message said "ask an admin")."""
    from datetime import timedelta

    from curation.errors import PermissionDenied
    from curation.store.models import utcnow

    auth.add_user(wb, admin, "kate", "annotator", password="kate-password-1")
    now = utcnow()
    for n in range(auth.MAX_FAILED_LOGINS):
        with pytest.raises(auth.InvalidCredentials, match="wrong username or password"):
            auth.authenticate(wb, "kate", f"guess-{n}", client="203.0.113.9", now=now)
    with pytest.raises(auth.InvalidCredentials, match="unlock it .*skinflow users unlock kate"):
        auth.authenticate(wb, "kate", "kate-password-1", client="203.0.113.9", now=now)  # the guesser's address waits
    assert auth.authenticate(wb, "kate", "kate-password-1", client="198.51.100.7", now=now).username == "kate"

    for n in range(auth.MAX_FAILED_LOGINS):  # the owner's own address locked too (a shared proxy, say)
        with pytest.raises(auth.InvalidCredentials):
            auth.authenticate(wb, "kate", f"typo-{n}", client="198.51.100.7", now=now)
    with pytest.raises(auth.InvalidCredentials, match="too many"):
        auth.authenticate(wb, "kate", "kate-password-1", client="198.51.100.7", now=now)
    with pytest.raises(PermissionDenied):
        auth.unlock(wb, auth.get_actor(wb, "kate"), "kate")
    assert auth.unlock(wb, admin, "kate") == 2 * auth.MAX_FAILED_LOGINS
    assert auth.authenticate(wb, "kate", "kate-password-1", client="198.51.100.7", now=now).username == "kate"

    for n in range(auth.MAX_FAILED_LOGINS):  # and a password set by an admin unlocks it as well
        with pytest.raises(auth.InvalidCredentials):
            auth.authenticate(wb, "kate", f"again-{n}", now=now + timedelta(minutes=1))
    auth.set_password(wb, admin, "kate", "kate-password-2")
    assert auth.authenticate(wb, "kate", "kate-password-2", now=now + timedelta(minutes=1)).username == "kate"


def test_unknown_names_cost_the_same_work_and_count_toward_the_throttle(wb, admin, monkeypatch):
    hashed = []
    real = auth._hasher

    class CountingHasher:
        def verify(self, digest, password):
            hashed.append("verify")
            return real.verify(digest, password)

        def hash(self, password):
            hashed.append("hash")
            return real.hash(password)

    monkeypatch.setattr(auth, "_hasher", CountingHasher())
    for n in range(auth.MAX_FAILED_LOGINS):
        with pytest.raises(auth.InvalidCredentials, match="wrong username or password"):
            auth.authenticate(wb, "nobody-here", f"guess-{n}", client="203.0.113.9")
    assert hashed == ["hash"] * auth.MAX_FAILED_LOGINS  # an argon2 computation each, as for a real account
    with pytest.raises(auth.InvalidCredentials, match="too many"):
        auth.authenticate(wb, "nobody-here", "guess", client="203.0.113.9")
    assert len(hashed) == auth.MAX_FAILED_LOGINS  # refused before any work


def test_parallel_guesses_cannot_race_the_throttle(wb, admin, monkeypatch):
    """12 wrong passwords at once: at most MAX_FAILED_LOGINS of them get their password checked."""
    import threading

    from sqlalchemy import func, select

    from curation.store.models import AuditEvent

    checked = []
    real = auth._hasher

    class CountingHasher:
        def verify(self, digest, password):
            checked.append(password)
            return real.verify(digest, password)

        def hash(self, password):
            return real.hash(password)

    monkeypatch.setattr(auth, "_hasher", CountingHasher())
    start = threading.Barrier(12)
    outcomes = []

    def guess(n):
        start.wait()
        try:
            auth.authenticate(wb, "admin", f"wrong-guess-{n}")
        except auth.InvalidCredentials as e:
            outcomes.append(str(e))

    threads = [threading.Thread(target=guess, args=(n,)) for n in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert len(outcomes) == 12
    assert len(checked) == auth.MAX_FAILED_LOGINS  # the rest were refused before their password was looked at
    assert sum("too many failed logins" in o for o in outcomes) == 12 - auth.MAX_FAILED_LOGINS
    with wb.session() as s:
        failed = s.scalar(select(func.count()).select_from(AuditEvent).where(AuditEvent.action == "auth.failed"))
    assert failed == auth.MAX_FAILED_LOGINS
