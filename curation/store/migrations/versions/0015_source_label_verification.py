"""images.source_verified_by / source_verified_at: a source's own label accepted in bulk by an admin

Nothing was exportable after importing a public dataset until each image was annotated and then verified by a
second account (10k submissions and 10k reviews for HAM10000). An admin can now accept a source's labels as they
are, chosen by their provenance (`skinflow verify --source ham10000 --where dx_type=histo`); undo clears them.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("images") as batch:
        batch.add_column(sa.Column("source_verified_by", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("source_verified_at", sa.DateTime(timezone=True), nullable=True))
        batch.create_foreign_key(op.f("fk_images_source_verified_by_users"), "users", ["source_verified_by"], ["id"])


def downgrade() -> None:
    with op.batch_alter_table("images") as batch:
        batch.drop_constraint(op.f("fk_images_source_verified_by_users"), type_="foreignkey")
        batch.drop_column("source_verified_at")
        batch.drop_column("source_verified_by")
