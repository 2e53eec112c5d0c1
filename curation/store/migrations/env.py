"""Alembic environment: runs against the engine that curation.store.db hands over (no alembic.ini)."""

from alembic import context

from curation.store.models import Base

config = context.config
engine = config.attributes["engine"]

with engine.connect() as connection:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=True,  # SQLite cannot ALTER most things: batch mode recreates the table
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()
