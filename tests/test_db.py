import sqlite3

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text

from curation.errors import ConfigError, DatabaseError
from curation.store.db import alembic_config, open_workbench
from curation.store.models import Base
from curation.store.settings import Settings

pytestmark = pytest.mark.database  # run again on PostgreSQL by `make test-postgres`


def test_models_and_migrations_agree(wb):
    with wb.engine.connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection, opts={"compare_type": True}), Base.metadata)
    assert diff == []


@pytest.mark.sqlite_only
def test_sqlite_runs_with_wal_foreign_keys_and_busy_timeout(wb):
    with wb.engine.connect() as connection:
        assert connection.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert connection.execute(text("PRAGMA foreign_keys")).scalar() == 1
        assert connection.execute(text("PRAGMA busy_timeout")).scalar() >= 10_000


def test_opening_twice_upgrades_once_and_keeps_data(tmp_path, admin, wb):
    again = open_workbench(wb.settings)
    with again.engine.connect() as connection:
        assert connection.execute(text("SELECT username FROM users")).scalars().all() == ["admin"]
        head = ScriptDirectory.from_config(alembic_config(again.engine)).get_current_head()
        assert connection.execute(text("SELECT version_num FROM alembic_version")).scalar() == head
    again.close()


def test_database_file_lives_under_home_and_url_can_be_overridden(tmp_path):
    settings = Settings.load(environ={"SKINFLOW_HOME": str(tmp_path / "h")})
    assert settings.db_url.endswith(str(tmp_path / "h" / "skinflow.db"))
    other = tmp_path / "elsewhere.db"
    settings = Settings.load(environ={"SKINFLOW_HOME": str(tmp_path / "h"), "SKINFLOW_DATABASE_URL": f"sqlite:///{other}"})
    bench = open_workbench(settings)
    bench.close()
    assert other.exists()
    assert sqlite3.connect(other).execute("SELECT count(*) FROM users").fetchone() == (0,)


def test_toml_config_and_env_precedence(tmp_path):
    home = tmp_path / "h"
    home.mkdir()
    (home / "skinflow.toml").write_text("max_image_mb = 5\nsplit_seed = 7\n")
    settings = Settings.load(environ={"SKINFLOW_HOME": str(home), "SKINFLOW_SPLIT_SEED": "9"})
    assert settings.max_image_mb == 5 and settings.split_seed == 9


@pytest.mark.parametrize(
    "environ,match",
    [
        ({"SKINFLOW_MAX_IMAGE_MB": "lots"}, "max_image_mb"),
        ({"SKINFLOW_SPLIT_FRACTIONS": "0.5,0.5,0.5"}, "sum to 1"),
        ({"SKINFLOW_CONFIG": "/nonexistent/skinflow.toml"}, "does not exist"),
    ],
)
def test_bad_settings_are_clear_errors(environ, match):
    with pytest.raises(ConfigError, match=match):
        Settings.load(environ=environ)


def test_broken_toml_is_a_clear_error(tmp_path):
    (tmp_path / "skinflow.toml").write_text("max_image_mb = = 3")
    with pytest.raises(ConfigError, match="not valid TOML"):
        Settings.load(environ={"SKINFLOW_HOME": str(tmp_path)})


def test_upgrading_a_version_1_database_keeps_its_data_and_downgrade_works(tmp_path, database_url):
    from alembic import command

    from curation.store.db import make_engine

    engine = make_engine(database_url or f"sqlite:///{tmp_path / 'old.db'}")
    cfg = alembic_config(engine)
    command.downgrade(cfg, "base")  # a PostgreSQL test database starts at head: every downgrade runs first
    command.upgrade(cfg, "0001")
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO users (username, display_name, role, password_hash, active, created_at) "
                "VALUES ('old', 'old', 'admin', 'x', true, '2026-01-01')"
            )
        )
    command.upgrade(cfg, "head")
    with engine.connect() as connection:
        assert connection.execute(text("SELECT username FROM users")).scalars().all() == ["old"]
        assert connection.execute(text("SELECT count(*) FROM leases")).scalar() == 0
    command.downgrade(cfg, "0001")
    with engine.connect() as connection:
        assert connection.execute(text("SELECT username FROM users")).scalars().all() == ["old"]
    command.downgrade(cfg, "base")
    engine.dispose()


def test_a_database_from_a_newer_version_is_refused_untouched(tmp_path, wb, admin):
    with wb.engine.begin() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = '0099_future'"))
    wb.close()
    with pytest.raises(DatabaseError, match="newer SkinFlow.*git pull"):
        open_workbench(wb.settings)
    with wb.engine.connect() as connection:
        assert connection.execute(text("SELECT version_num FROM alembic_version")).scalar() == "0099_future"
        assert connection.execute(text("SELECT username FROM users")).scalars().all() == ["admin"]


def test_processes_opening_a_new_workbench_at_once_all_succeed(tmp_path):
    """They race to run the migrations; the lock makes the others wait and find them done."""
    import subprocess
    import sys

    code = (
        "import sys; from curation.store.db import open_workbench; from curation.store.settings import Settings; "
        "open_workbench(Settings.load(environ={}, home=sys.argv[1])).close()"
    )
    processes = [
        subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "new")], stderr=subprocess.PIPE, text=True) for _ in range(4)
    ]
    errors = [p.communicate(timeout=120)[1] for p in processes]
    assert [p.returncode for p in processes] == [0, 0, 0, 0], errors


def test_upgrading_a_database_with_images_and_annotations_rebuilds_the_images_table_and_keeps_every_row(tmp_path, database_url):
    """Migrations that rebuild `images` (SQLite batch mode: copy, drop, rename) run under rows that refer to it."""
    from alembic import command

    from curation.store.db import make_engine, upgrade

    engine = make_engine(database_url or f"sqlite:///{tmp_path / 'filled.db'}")
    cfg = alembic_config(engine)
    command.downgrade(cfg, "base")
    command.upgrade(cfg, "0013")
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO users (id, username, display_name, role, password_hash, active, created_at) "
                "VALUES (1, 'ann', 'ann', 'annotator', 'x', true, '2026-01-01')"
            )
        )
        for image_id, external in ((1, "7"), (2, None)):
            connection.execute(
                text(
                    "INSERT INTO images (id, sha256, external_id, source, source_ref, source_label, meta, status, created_at) "
                    "VALUES (:id, :sha, :ext, 'ddi', '', 'melanoma', '{\"lesion\": \"L1\"}', 'annotated', '2026-01-01')"
                ),
                {"id": image_id, "sha": f"{image_id:064x}", "ext": external},
            )
            connection.execute(
                text(
                    "INSERT INTO annotations (id, image_id, user_id, version, caption, diagnosis_status, quality_flags, "
                    "created_at) VALUES (:id, :id, 1, 1, '{}', 'confirmed', '[]', '2026-01-01')"
                ),
                {"id": image_id},
            )
    upgrade(engine)  # what opening the workbench does
    with engine.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM annotations")).scalar() == 2
        assert connection.execute(text("SELECT id, external_id FROM images ORDER BY id")).all() == [(1, "7"), (2, None)]
        assert connection.execute(text("SELECT image_id, source, external_id FROM image_sources")).all() == [(1, "ddi", "7")]
    command.downgrade(cfg, "0013")  # and back, with the rows still there
    with engine.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM images")).scalar() == 2
    command.downgrade(cfg, "base")
    engine.dispose()
