"""Alembic environment: runs against the engine that curation.store.db hands over (no alembic.ini)."""

from alembic import context
from sqlalchemy import text

from curation.store.models import Base

config = context.config
engine = config.attributes["engine"]

with engine.connect() as connection:
    sqlite = connection.dialect.name == "sqlite"
    if sqlite:
        # batch mode recreates a table (copy, drop, rename); with foreign keys enforced, dropping `images` under
        # rows that refer to it fails. Off for the migration (a PRAGMA outside any transaction), checked after.
        connection.execute(text("PRAGMA foreign_keys=OFF"))
        connection.commit()
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=True,  # SQLite cannot ALTER most things: batch mode recreates the table
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()
        if sqlite:
            broken = connection.execute(text("PRAGMA foreign_key_check")).fetchall()
            if broken:  # rolled back with the migration: nothing is left half-done
                raise RuntimeError(f"the migration left {len(broken)} rows pointing at missing rows: {broken[:5]}")
    if sqlite:
        connection.execute(text("PRAGMA foreign_keys=ON"))
        connection.commit()
