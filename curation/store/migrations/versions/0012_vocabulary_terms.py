"""vocabulary_terms: reviewers' decisions on caption terms the vocabulary lacked

An accepted term (with its synonyms) extends this workbench's vocabulary; a rejected one leaves the review list.
Terms nobody decided on yet are read from the annotations, so nothing needs backfilling.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-05
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "vocabulary_terms",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("field", sa.String(length=32), nullable=False),
        sa.Column("term", sa.String(length=200), nullable=False),
        sa.Column("decision", sa.String(length=16), nullable=False),
        sa.Column("synonyms", sa.JSON(), nullable=False),
        sa.Column("decided_by", sa.Integer(), nullable=True),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("decision IN ('accepted', 'rejected')", name=op.f("ck_vocabulary_terms_decision")),
        sa.ForeignKeyConstraint(["decided_by"], ["users.id"], name=op.f("fk_vocabulary_terms_decided_by_users")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_vocabulary_terms")),
        sa.UniqueConstraint("field", "term", name=op.f("uq_vocabulary_terms_field_term")),
    )


def downgrade() -> None:
    op.drop_table("vocabulary_terms")
