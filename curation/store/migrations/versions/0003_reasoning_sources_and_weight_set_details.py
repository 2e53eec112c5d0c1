"""reasoning sources and weight set details

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # server defaults fill the rows that exist already
    with op.batch_alter_table("reasonings", schema=None) as batch_op:
        batch_op.add_column(sa.Column("source", sa.String(length=16), nullable=False, server_default="llm"))
        batch_op.add_column(sa.Column("prompt_version", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("meta", sa.JSON(), nullable=False, server_default="{}"))

    with op.batch_alter_table("weight_sets", schema=None) as batch_op:
        batch_op.add_column(sa.Column("counts", sa.JSON(), nullable=False, server_default="{}"))
        batch_op.add_column(sa.Column("floor", sa.Float(), nullable=False, server_default="0.01"))
        batch_op.add_column(sa.Column("params", sa.JSON(), nullable=False, server_default="{}"))


def downgrade() -> None:
    with op.batch_alter_table("weight_sets", schema=None) as batch_op:
        batch_op.drop_column("params")
        batch_op.drop_column("floor")
        batch_op.drop_column("counts")

    with op.batch_alter_table("reasonings", schema=None) as batch_op:
        batch_op.drop_column("meta")
        batch_op.drop_column("prompt_version")
        batch_op.drop_column("source")
