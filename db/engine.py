"""Engine and session factory; the single place that turns settings into a connection."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache

from sqlalchemy import Engine, create_engine
from sqlalchemy.orm import Session, sessionmaker

from ser.settings import Settings, get_settings

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


def resolve_url(settings: Settings | None = None) -> str:
    """DATABASE_URL if set, else the embedded server's URL (starting it if needed)."""
    settings = settings or get_settings()
    if settings.database_url:
        return normalise_url(settings.database_url)
    return start_embedded(settings.embedded_pgdata)


def make_engine(url: str, **kwargs: object) -> Engine:
    return create_engine(normalise_url(url), pool_pre_ping=True, future=True, **kwargs)  # type: ignore[arg-type]


@lru_cache(maxsize=4)
def _engine_for(url: str) -> Engine:
    return make_engine(url)


def get_engine(settings: Settings | None = None) -> Engine:
    return _engine_for(resolve_url(settings))


def session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(bind=engine, expire_on_commit=False)


@contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    """A session in one transaction: committed on success, rolled back on error."""
    with session_factory(engine)() as session, session.begin():
        yield session
