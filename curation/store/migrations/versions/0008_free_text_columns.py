"""free-text columns as TEXT: PostgreSQL enforces VARCHAR lengths that SQLite ignores

Model names, prompt versions, display names (Label Studio e-mails) and the joined export format list
come from users and servers, not from us; on PostgreSQL a long one failed the whole write.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

# table -> [(column, old length)]
WIDENED = {
    "exports": [("format", 32)],
    "drafts": [("producer", 128), ("version", 64)],
    "reasonings": [("producer", 128), ("prompt_version", 64)],
    "users": [("display_name", 128)],
}


def upgrade() -> None:
    for table, columns in WIDENED.items():
        with op.batch_alter_table(table) as batch:
            for column, length in columns:
                batch.alter_column(column, existing_type=sa.String(length=length), type_=sa.Text())


def downgrade() -> None:
    # values longer than the old limit are cut to it: the old schema cannot hold them
    for table, columns in WIDENED.items():
        for column, length in columns:
            op.execute(sa.text(f"UPDATE {table} SET {column} = substr({column}, 1, {length}) WHERE length({column}) > {length}"))
        with op.batch_alter_table(table) as batch:
            for column, length in columns:
                batch.alter_column(column, existing_type=sa.Text(), type_=sa.String(length=length))
