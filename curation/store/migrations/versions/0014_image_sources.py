"""image_sources: a source row is (source, id), and byte-identical pictures from several rows are linked, not lost

Image ids were unique per workbench: after a DDI import (ids 1..656) a clinic CSV with ids 1-3 counted as "already
present" and imported nothing. images.external_id is now unique per source only (kept as a plain index), and every
source row with an id is in image_sources (backfilled from images), where a second row naming the same bytes links
to the stored picture with its own label and metadata.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "image_sources",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("image_id", sa.Integer(), nullable=False),
        sa.Column("source", sa.String(length=32), nullable=False),
        sa.Column("external_id", sa.String(length=512), nullable=False),
        sa.Column("source_label", sa.Text(), nullable=True),
        sa.Column("meta", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["image_id"], ["images.id"], name=op.f("fk_image_sources_image_id_images"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_image_sources")),
        sa.UniqueConstraint("source", "external_id", name=op.f("uq_image_sources_source_external_id")),
    )
    op.create_index("ix_image_sources_image_id", "image_sources", ["image_id"])
    op.execute(
        "INSERT INTO image_sources (image_id, source, external_id, source_label, meta, created_at) "
        "SELECT id, source, external_id, source_label, meta, created_at FROM images WHERE external_id IS NOT NULL"
    )
    with op.batch_alter_table("images") as batch:
        batch.drop_constraint("uq_images_external_id", type_="unique")
        batch.create_index("ix_images_external_id", ["external_id"])


def downgrade() -> None:
    with op.batch_alter_table("images") as batch:
        batch.drop_index("ix_images_external_id")
        batch.create_unique_constraint("uq_images_external_id", ["external_id"])
    op.drop_index("ix_image_sources_image_id", table_name="image_sources")
    op.drop_table("image_sources")
