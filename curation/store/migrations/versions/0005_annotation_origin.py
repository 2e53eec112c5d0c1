"""annotation origin

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("annotations", schema=None) as batch_op:
        batch_op.add_column(sa.Column("origin", sa.String(length=512), nullable=True))
        batch_op.create_unique_constraint(batch_op.f("uq_annotations_origin"), ["origin"])


def downgrade() -> None:
    with op.batch_alter_table("annotations", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("uq_annotations_origin"), type_="unique")
        batch_op.drop_column("origin")
