"""Database models (SQLAlchemy 2.x). Changes to these need an Alembic migration
(curation/store/migrations/versions); tests/test_db.py checks that the two agree.

Annotations are append-only: an edit is a new row with `supersedes_id` and `version + 1`.
Every mutation writes an AuditEvent (curation/store/audit.py).

One module on purpose: the whole schema in one place is what a migration is checked against and what a reader
compares with the migrations; split, a relationship would name a class from another file.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


class DraftKind(StrEnum):
    """Where a draft came from, in the one order everything that picks between drafts uses (the form's prefill, the
    diagnosis suggestions, Insights): the routed draft (the best source per field, curation/assist/routing.py),
    a trained model's suggestion, an LLM's draft, the demo's synthetic one."""

    ROUTED = "routed"
    MODEL = "model"
    LLM = "llm"
    SYNTHETIC = "synthetic"

    @property
    def rank(self) -> int:
        """0 for the draft preferred first."""
        return _DRAFT_RANK[self]


_DRAFT_RANK = {kind: rank for rank, kind in enumerate(DraftKind)}
DRAFT_KINDS = tuple(kind.value for kind in DraftKind)
DIAGNOSING_KINDS = (DraftKind.ROUTED, DraftKind.MODEL, DraftKind.LLM)  # drafts that rank diagnoses (synthetic ones do not)
ROLES = ("annotator", "reviewer", "admin")
# Image.meta keys naming a lesion or a patient: images that share one are one lesion (one split; compared side by side)
LESION_COLUMNS = ("lesion_id", "patient_id")
IMAGE_STATUSES = ("image_missing", "pending", "annotated", "verified")
DIAGNOSIS_STATUSES = ("confirmed", "corrected", "uncertain")
REVIEW_DECISIONS = ("verified", "rejected")
RUN_STATUSES = ("queued", "running", "done", "failed", "cancelled")
UNFINISHED_RUN_STATUSES = RUN_STATUSES[:2]  # a process is (or will be) working on it
TERM_DECISIONS = ("accepted", "rejected")  # a new caption term a reviewer decided on
NEEDS_WORK_STATUSES = ("pending", "annotated")  # images a suggestion or a labeller can still help


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(
        naming_convention={
            "ix": "ix_%(table_name)s_%(column_0_N_name)s",
            "uq": "uq_%(table_name)s_%(column_0_N_name)s",
            "ck": "ck_%(table_name)s_%(constraint_name)s",
            "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
            "pk": "pk_%(table_name)s",
        }
    )
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON, datetime: DateTime(timezone=True)}


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class User(Base):
    __tablename__ = "users"
    __table_args__ = (CheckConstraint(_in("role", ROLES), name="role"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    display_name: Mapped[str] = mapped_column(Text, default="")
    role: Mapped[str] = mapped_column(String(16))
    password_hash: Mapped[str] = mapped_column(String(256))
    active: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # up on every change of role, password or active flag: an app session from before the change ends
    credentials_version: Mapped[int] = mapped_column(default=0, server_default="0")
    # the identity provider's verified email (single sign-on maps a login to this account by it); None: local only
    email: Mapped[str | None] = mapped_column(String(320), unique=True, nullable=True)


class LoginAttempt(Base):
    """Every login attempt, recorded before its password is checked (the throttle counts these).
    succeeded: None while being checked, then True or False."""

    __tablename__ = "login_attempts"
    __table_args__ = (Index("ix_login_attempts_username_at", "username", "at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(Text)
    at: Mapped[datetime] = mapped_column()
    succeeded: Mapped[bool | None] = mapped_column(nullable=True)
    client: Mapped[str | None] = mapped_column(String(64), nullable=True)  # the address it came from (the throttle's)


class LoginSession(Base):
    """A browser's login that survives a reload: the cookie holds a random token, only its sha256 is stored.
    Ends at expires_at, on logout (revoked_at), or when the account's credentials_version moves on."""

    __tablename__ = "login_sessions"
    __table_args__ = (Index("ix_login_sessions_user_id", "user_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    credentials_version: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column()
    revoked_at: Mapped[datetime | None] = mapped_column(nullable=True)


class Image(Base):
    __tablename__ = "images"
    __table_args__ = (
        CheckConstraint(_in("status", IMAGE_STATUSES), name="status"),
        CheckConstraint("fitzpatrick IS NULL OR (fitzpatrick BETWEEN 1 AND 6)", name="fitzpatrick"),
        Index("ix_images_status", "status", "id"),
        Index("ix_images_diagnosis_key", "diagnosis_key"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    # sha256 of the stored (metadata-stripped) file: the content address. Null while image_missing.
    sha256: Mapped[str | None] = mapped_column(String(64), unique=True)
    # sha256 of the bytes as received: re-importing the same file is recognised before any decoding.
    original_sha256: Mapped[str | None] = mapped_column(String(64), unique=True)
    # The first source row's own id (Fitzpatrick17k md5hash, a URL, HAM10000 image_id): unique per source, not per
    # workbench (two datasets both number from 1); image_sources holds every source row naming this picture.
    external_id: Mapped[str | None] = mapped_column(String(512), index=True)
    file_path: Mapped[str | None] = mapped_column(String(256))  # relative to the store
    source: Mapped[str] = mapped_column(String(32))  # folder | csv | fitzpatrick17k | synthetic | a dataset recipe (ham10000 ...)
    source_ref: Mapped[str] = mapped_column(Text, default="")  # original path or URL
    url: Mapped[str | None] = mapped_column(Text)
    source_label: Mapped[str | None] = mapped_column(Text)  # label text as the source gave it
    diagnosis_key: Mapped[str | None] = mapped_column(String(128))  # source label normalised to the taxonomy
    fitzpatrick: Mapped[int | None] = mapped_column(Integer)
    width: Mapped[int | None] = mapped_column(Integer)
    height: Mapped[int | None] = mapped_column(Integer)
    format: Mapped[str | None] = mapped_column(String(16))
    n_bytes: Mapped[int | None] = mapped_column(Integer)
    dhash: Mapped[str | None] = mapped_column(String(16))  # perceptual hash: near-duplicates share a split
    meta: Mapped[dict[str, Any]] = mapped_column(default=dict)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    verified_annotation_id: Mapped[int | None] = mapped_column(
        ForeignKey("annotations.id", use_alter=True, name="fk_images_verified_annotation_id_annotations")
    )
    # the source's own label (diagnosis_key, or its group) accepted as it is by an admin, in bulk
    # (curation/labelling/source_labels.py): exportable without an annotation; cleared again by undo
    source_verified_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    source_verified_at: Mapped[datetime | None] = mapped_column()
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    drafts: Mapped[list[Draft]] = relationship(back_populates="image", order_by="Draft.id")
    annotations: Mapped[list[Annotation]] = relationship(
        back_populates="image", order_by="Annotation.id", foreign_keys="Annotation.image_id"
    )


class ImageSource(Base):
    """One row of an imported metadata file (a public dataset, a clinic CSV) and the picture it names.

    A source row is identified by (source, external_id): the same id in two sources is two rows, and re-importing
    a file finds its rows again. A picture that is byte-identical in several source rows is stored once (one
    image); each row links to it here with its own label and metadata, so no row is lost to another's."""

    __tablename__ = "image_sources"
    __table_args__ = (UniqueConstraint("source", "external_id"), Index("ix_image_sources_image_id", "image_id"))

    id: Mapped[int] = mapped_column(primary_key=True)
    image_id: Mapped[int] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"))
    source: Mapped[str] = mapped_column(String(32))
    external_id: Mapped[str] = mapped_column(String(512))
    source_label: Mapped[str | None] = mapped_column(Text)
    meta: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    image: Mapped[Image] = relationship()


class Draft(Base):
    __tablename__ = "drafts"
    __table_args__ = (CheckConstraint(_in("kind", DRAFT_KINDS), name="kind"), Index("ix_drafts_image_id", "image_id"))

    id: Mapped[int] = mapped_column(primary_key=True)
    image_id: Mapped[int] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(16))
    producer: Mapped[str] = mapped_column(Text)  # model name or generator
    version: Mapped[str] = mapped_column(Text)  # prompt / model / generator version
    caption: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    diagnoses: Mapped[list[Any]] = mapped_column(default=list)  # [{"key", "text", "score"}], ranked
    raw_reply: Mapped[str | None] = mapped_column(Text)
    error: Mapped[str | None] = mapped_column(Text)
    meta: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    image: Mapped[Image] = relationship(back_populates="drafts")


class Annotation(Base):
    __tablename__ = "annotations"
    __table_args__ = (
        CheckConstraint(_in("diagnosis_status", DIAGNOSIS_STATUSES), name="diagnosis_status"),
        Index("ix_annotations_image_id", "image_id"),
        Index("ix_annotations_user_id_image_id", "user_id", "image_id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    image_id: Mapped[int] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    version: Mapped[int] = mapped_column(Integer, default=1)
    supersedes_id: Mapped[int | None] = mapped_column(ForeignKey("annotations.id"), unique=True)
    caption: Mapped[dict[str, Any]] = mapped_column(JSON)
    diagnosis_key: Mapped[str | None] = mapped_column(String(128))
    diagnosis_text: Mapped[str | None] = mapped_column(Text)  # free text when no taxonomy key fits
    diagnosis_status: Mapped[str] = mapped_column(String(16))
    quality_flags: Mapped[list[Any]] = mapped_column(default=list)
    rationale: Mapped[str | None] = mapped_column(Text)
    seconds_spent: Mapped[float | None] = mapped_column(Float)
    based_on_draft_id: Mapped[int | None] = mapped_column(ForeignKey("drafts.id"))
    # where an annotation made outside the workbench came from, e.g. a Label Studio annotation's address
    origin: Mapped[str | None] = mapped_column(String(512), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    image: Mapped[Image] = relationship(back_populates="annotations", foreign_keys=[image_id])
    user: Mapped[User] = relationship()


class Review(Base):
    __tablename__ = "reviews"
    __table_args__ = (
        CheckConstraint(_in("decision", REVIEW_DECISIONS), name="decision"),
        Index("ix_reviews_annotation_id", "annotation_id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    annotation_id: Mapped[int] = mapped_column(ForeignKey("annotations.id", ondelete="CASCADE"))
    reviewer_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    decision: Mapped[str] = mapped_column(String(16))
    comment: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Reasoning(Base):
    __tablename__ = "reasonings"

    id: Mapped[int] = mapped_column(primary_key=True)
    image_id: Mapped[int] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"))
    annotation_id: Mapped[int | None] = mapped_column(ForeignKey("annotations.id"))
    source: Mapped[str] = mapped_column(String(16), default="llm")  # llm (annotator rationales are read from annotations)
    producer: Mapped[str] = mapped_column(Text)  # model name or username
    prompt_version: Mapped[str | None] = mapped_column(Text)
    text: Mapped[str] = mapped_column(Text)
    fields_mentioned: Mapped[list[Any]] = mapped_column(default=list)
    meta: Mapped[dict[str, Any]] = mapped_column(default=dict)  # tokens, ...
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class WeightSet(Base):
    __tablename__ = "weight_sets"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(128))
    weights: Mapped[dict[str, Any]] = mapped_column(JSON)  # field -> alpha_i, sums to 1
    method: Mapped[str] = mapped_column(String(64))
    n_reasonings: Mapped[int] = mapped_column(Integer, default=0)
    counts: Mapped[dict[str, Any]] = mapped_column(default=dict)  # field -> reasonings mentioning it
    floor: Mapped[float] = mapped_column(Float, default=0.01)
    params: Mapped[dict[str, Any]] = mapped_column(default=dict)  # sources, producers, prompt versions
    active: Mapped[bool] = mapped_column(default=False)
    created_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Export(Base):
    __tablename__ = "exports"

    id: Mapped[int] = mapped_column(primary_key=True)
    path: Mapped[str] = mapped_column(Text)
    format: Mapped[str] = mapped_column(Text)
    n_records: Mapped[int] = mapped_column(Integer)
    manifest_sha256: Mapped[str] = mapped_column(String(64))
    params: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class TrainingRun(Base):
    __tablename__ = "training_runs"
    __table_args__ = (CheckConstraint(_in("status", RUN_STATUSES), name="status"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    export_id: Mapped[int | None] = mapped_column(ForeignKey("exports.id"))
    preset: Mapped[str] = mapped_column(String(64))
    config: Mapped[dict[str, Any]] = mapped_column(default=dict)
    pid: Mapped[int | None] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16), default="queued")
    log_path: Mapped[str | None] = mapped_column(Text)
    checkpoint_path: Mapped[str | None] = mapped_column(Text)
    metrics: Mapped[dict[str, Any]] = mapped_column(default=dict)
    error: Mapped[str | None] = mapped_column(Text)
    created_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column()


class AuditEvent(Base):
    __tablename__ = "audit_events"
    __table_args__ = (Index("ix_audit_events_entity", "entity", "entity_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    username: Mapped[str] = mapped_column(String(64))  # kept as text: survives a renamed user
    action: Mapped[str] = mapped_column(String(64))
    entity: Mapped[str] = mapped_column(String(32))
    entity_id: Mapped[int | None] = mapped_column(Integer)
    payload: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Lease(Base):
    """An image handed to one annotator until `expires_at`, so two people are not served it at once."""

    __tablename__ = "leases"

    image_id: Mapped[int] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    expires_at: Mapped[datetime] = mapped_column()
    gold: Mapped[bool] = mapped_column(default=False)  # served as an unannounced gold item


class QueueScore(Base):
    """How much labelling an image would gain from a person now, per queue strategy (higher first).
    Written when model suggestions are imported; images without a score come after scored ones."""

    __tablename__ = "queue_scores"
    __table_args__ = (Index("ix_queue_scores_uncertainty", "uncertainty"), Index("ix_queue_scores_disagreement", "disagreement"))

    image_id: Mapped[int] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"), primary_key=True)
    uncertainty: Mapped[float | None] = mapped_column(Float)  # 1 - the suggestion's top-1 score
    disagreement: Mapped[float | None] = mapped_column(Float)  # field distance between LLM draft and suggestion
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class Skip(Base):
    """An annotator skipped an image: it is served to them again only when nothing else is left."""

    __tablename__ = "skips"

    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), primary_key=True)
    image_id: Mapped[int] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class SavedWork(Base):
    """An annotator's unsubmitted form ("Save draft"), restored when they come back to the image."""

    __tablename__ = "saved_work"

    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), primary_key=True)
    image_id: Mapped[int] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"), primary_key=True)
    form: Mapped[dict[str, Any]] = mapped_column(JSON)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class GoldAssignment(Base):
    """A verified image served to an annotator as a gold item (they are not told)."""

    __tablename__ = "gold_assignments"

    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), primary_key=True)
    image_id: Mapped[int] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"), primary_key=True)
    served_at: Mapped[datetime] = mapped_column(default=utcnow)


class ReaderStudy(Base):
    """A blinded reader study: experts rate the outputs of two or more sources on a sample of verified images."""

    __tablename__ = "reader_studies"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    sources: Mapped[list[Any]] = mapped_column(default=list)  # [{"key", "kind", "producer", "version"}]
    seed: Mapped[int] = mapped_column(Integer, default=0)
    created_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ReaderStudyItem(Base):
    """One image of a study with each source's output frozen at creation (later drafts change nothing)."""

    __tablename__ = "reader_study_items"
    __table_args__ = (Index("ix_reader_study_items_study_id", "study_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("reader_studies.id", ondelete="CASCADE"))
    image_id: Mapped[int] = mapped_column(ForeignKey("images.id"))
    position: Mapped[int] = mapped_column(Integer)
    outputs: Mapped[dict[str, Any]] = mapped_column(default=dict)  # source key -> {"caption", "diagnoses"}


class ReaderRating(Base):
    """One expert's Likert ratings (1-5) of one source's output on one item."""

    __tablename__ = "reader_ratings"
    __table_args__ = (UniqueConstraint("item_id", "user_id", "source_key"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("reader_study_items.id", ondelete="CASCADE"))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    source_key: Mapped[str] = mapped_column(String(200))
    correctness: Mapped[int] = mapped_column(Integer)
    usefulness: Mapped[int] = mapped_column(Integer)
    trust: Mapped[int] = mapped_column(Integer)
    comment: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Setting(Base):
    """Workflow settings an admin changes in the app (overlap, lease time, gold rate ...)."""

    __tablename__ = "settings"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[Any] = mapped_column(JSON)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class VocabularyTerm(Base):
    """A reviewer's decision on a term annotators typed that the vocabulary lacked: accepted terms (with their
    synonyms) extend this workbench's vocabulary; rejected ones stay in the annotations that use them but leave the
    review list. Undecided terms are not stored: they are read from the annotations (curation/labelling/vocabulary.py)."""

    __tablename__ = "vocabulary_terms"
    __table_args__ = (
        CheckConstraint(_in("decision", TERM_DECISIONS), name="decision"),
        UniqueConstraint("field", "term"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    field: Mapped[str] = mapped_column(String(32))
    term: Mapped[str] = mapped_column(String(200))
    decision: Mapped[str] = mapped_column(String(16))
    synonyms: Mapped[list[Any]] = mapped_column(default=list)
    decided_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    decided_at: Mapped[datetime] = mapped_column(default=utcnow)
