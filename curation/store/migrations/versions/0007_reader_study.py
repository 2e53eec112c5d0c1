"""blinded reader study

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "reader_studies",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("sources", sa.JSON(), nullable=False),
        sa.Column("seed", sa.Integer(), nullable=False),
        sa.Column("created_by", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["created_by"], ["users.id"], name=op.f("fk_reader_studies_created_by_users")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_reader_studies")),
        sa.UniqueConstraint("name", name=op.f("uq_reader_studies_name")),
    )
    op.create_table(
        "reader_study_items",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("study_id", sa.Integer(), nullable=False),
        sa.Column("image_id", sa.Integer(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("outputs", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(["image_id"], ["images.id"], name=op.f("fk_reader_study_items_image_id_images")),
        sa.ForeignKeyConstraint(
            ["study_id"], ["reader_studies.id"], name=op.f("fk_reader_study_items_study_id_reader_studies"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_reader_study_items")),
    )
    op.create_index("ix_reader_study_items_study_id", "reader_study_items", ["study_id"], unique=False)
    op.create_table(
        "reader_ratings",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("item_id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("source_key", sa.String(length=200), nullable=False),
        sa.Column("correctness", sa.Integer(), nullable=False),
        sa.Column("usefulness", sa.Integer(), nullable=False),
        sa.Column("trust", sa.Integer(), nullable=False),
        sa.Column("comment", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["item_id"], ["reader_study_items.id"], name=op.f("fk_reader_ratings_item_id_reader_study_items"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name=op.f("fk_reader_ratings_user_id_users")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_reader_ratings")),
        sa.UniqueConstraint("item_id", "user_id", "source_key", name=op.f("uq_reader_ratings_item_id_user_id_source_key")),
    )


def downgrade() -> None:
    op.drop_table("reader_ratings")
    op.drop_index("ix_reader_study_items_study_id", table_name="reader_study_items")
    op.drop_table("reader_study_items")
    op.drop_table("reader_studies")
