"""queue scores for the uncertainty and disagreement strategies

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "queue_scores",
        sa.Column("image_id", sa.Integer(), nullable=False),
        sa.Column("uncertainty", sa.Float(), nullable=True),
        sa.Column("disagreement", sa.Float(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["image_id"], ["images.id"], name=op.f("fk_queue_scores_image_id_images"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("image_id", name=op.f("pk_queue_scores")),
    )
    op.create_index("ix_queue_scores_uncertainty", "queue_scores", ["uncertainty"], unique=False)
    op.create_index("ix_queue_scores_disagreement", "queue_scores", ["disagreement"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_queue_scores_disagreement", table_name="queue_scores")
    op.drop_index("ix_queue_scores_uncertainty", table_name="queue_scores")
    op.drop_table("queue_scores")
