"""Engines and sessions: the one place that turns a database URL into a connection.

It takes URLs, never settings: the edges (the CLI, the flow entry functions, Alembic's
``env.py``) read ``DATABASE_URL`` and hand it to :func:`resolve_url`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

from sqlalchemy import Engine, create_engine
from sqlalchemy.engine import URL, make_url
from sqlalchemy.orm import Session, sessionmaker

from .embedded import start_embedded


class DatabaseUrlError(ValueError):
    """DATABASE_URL is set to something this project cannot use."""


def normalise_url(url: str) -> str:
    """Accept postgres:// and postgresql:// and pin the psycopg2 driver.

    SQLAlchemy 2.1 maps a bare ``postgresql://`` to psycopg 3, which is not a dependency.
    """
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg2://" + url[len(prefix):]
    if not url.startswith("postgresql+psycopg2://"):
        raise DatabaseUrlError(
            f"unsupported DATABASE_URL {url.split('@')[-1]!r}: use postgresql+psycopg2://user@host/db"
        )
    return url


def resolve_url(database_url: str | None, *, embedded_pgdata: Path) -> str:
    """``database_url`` if set, else the URL of the embedded server in ``embedded_pgdata``
    (started if it is not running)."""
    if database_url:
        return normalise_url(database_url)
    return start_embedded(embedded_pgdata)


def describe_server(url: URL | str) -> str:
    """``user@host:port/database`` of ``url``, never its password."""
    u = make_url(url) if isinstance(url, str) else url
    user = f"{u.username}@" if u.username else ""
    socket_dir = None if u.host else u.query.get("host")
    if socket_dir:  # a Unix socket (the embedded server)
        return f"{user}/{u.database or ''} (socket in {socket_dir})"
    port = f":{u.port}" if u.port else ""
    return f"{user}{u.host or 'localhost'}{port}/{u.database or ''}"


def make_engine(url: str, **kwargs: object) -> Engine:
    """A new engine for ``url`` (the caller disposes of it)."""
    return create_engine(normalise_url(url), pool_pre_ping=True, future=True, **kwargs)  # type: ignore[arg-type]


@lru_cache(maxsize=4)
def cached_engine(url: str) -> Engine:
    """One engine (and connection pool) per URL for the life of the process."""
    return make_engine(url)


def session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(bind=engine, expire_on_commit=False)


@contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    """A session in one transaction: committed on success, rolled back on error."""
    with session_factory(engine)() as session, session.begin():
        yield session
