"""Migrations: one head, a full round trip with data in the tables, and no drift from the models."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, inspect, text

from db.migrate import (
    alembic_config,
    current_revision,
    downgrade,
    head_revision,
    include_object,
    upgrade,
)
from db.models import Base


def test_single_head() -> None:
    heads = ScriptDirectory.from_config(alembic_config()).get_heads()
    assert len(heads) == 1, heads


def test_upgrade_downgrade_upgrade_round_trip(scratch_engine: Engine) -> None:
    upgrade(scratch_engine)
    assert current_revision(scratch_engine) == head_revision()
    with scratch_engine.begin() as conn:
        conn.execute(text(
            "INSERT INTO actors (corpus, actor_code, sex) VALUES ('ravdess', '01', 'male')"))
        assert conn.execute(text("SELECT count(*) FROM label_schemes")).scalar_one() >= 4
    downgrade(scratch_engine, "base")
    assert current_revision(scratch_engine) is None
    assert "actors" not in inspect(scratch_engine).get_table_names()
    upgrade(scratch_engine)
    assert current_revision(scratch_engine) == head_revision()
    with scratch_engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM actors")).scalar_one() == 0


def test_models_and_migrations_agree(engine: Engine) -> None:
    with engine.connect() as conn:
        ctx = MigrationContext.configure(
            conn, opts={"compare_type": True, "include_object": include_object})
        diff = compare_metadata(ctx, Base.metadata)
    assert diff == [], diff


def test_script_head_without_alembic_equals_alembic_head(scratch_engine: Engine) -> None:
    """ensure_migrated's cheap check reads the head from the version files; it must agree with
    alembic, and an empty or behind database must still be migrated."""
    from db.migrate import _stamped_revisions, ensure_migrated, script_head

    assert script_head() == head_revision()
    assert _stamped_revisions(scratch_engine) == []
    ensure_migrated(scratch_engine)
    assert current_revision(scratch_engine) == head_revision()
    downgrade(scratch_engine, "-1")
    ensure_migrated(scratch_engine)
    assert _stamped_revisions(scratch_engine) == [head_revision()]
