"""routed drafts: a draft kind for the best-source prefill (each field from the source that agrees best with
verified annotations on held-out images)

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("drafts") as batch:
        batch.drop_constraint(op.f("ck_drafts_kind"), type_="check")
        batch.create_check_constraint("kind", "kind IN ('llm', 'model', 'synthetic', 'routed')")


def downgrade() -> None:
    # routed drafts are derived from the others: they go (annotations that started from one keep no link)
    routed = "SELECT id FROM drafts WHERE kind = 'routed'"
    op.execute(sa.text(f"UPDATE annotations SET based_on_draft_id = NULL WHERE based_on_draft_id IN ({routed})"))
    op.execute(sa.text("DELETE FROM drafts WHERE kind = 'routed'"))
    with op.batch_alter_table("drafts") as batch:
        batch.drop_constraint(op.f("ck_drafts_kind"), type_="check")
        batch.create_check_constraint("kind", "kind IN ('llm', 'model', 'synthetic')")
