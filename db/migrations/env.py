"""Alembic environment: a connection or URL handed in by code (``db.migrate``), else the
settings' database (``DATABASE_URL`` or the embedded server), so ``alembic upgrade head`` works.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from config import get_settings
from db.engine import make_engine, resolve_url
from db.migrate import include_object
from db.models import Base

config = context.config
target_metadata = Base.metadata


def _url() -> str:
    url: str | None = config.attributes.get("url")
    if url:
        return url
    settings = get_settings()
    return resolve_url(settings.database_url, embedded_pgdata=settings.embedded_pgdata)


def _configure(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        compare_type=True,
        include_object=include_object,
    )


def run_migrations_offline() -> None:
    context.configure(
        url=_url(),
        target_metadata=target_metadata,
        literal_binds=True,
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection: Connection | None = config.attributes.get("connection")
    if connection is not None:
        _configure(connection)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = make_engine(_url())
    with engine.connect() as conn:
        _configure(conn)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
