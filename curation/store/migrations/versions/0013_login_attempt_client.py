"""login_attempts.client: the address a login came from, so failed guesses lock (account, address), not the account

Five wrong passwords from anywhere locked the account for everyone, its owner included; counted per address, a
guesser locks out only themselves. Earlier attempts have no address: they count for none (they expire within the
15-minute window anyway).

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("login_attempts") as batch:
        batch.add_column(sa.Column("client", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("login_attempts") as batch:
        batch.drop_column("client")
