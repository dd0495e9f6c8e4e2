"""Shared CLI plumbing: open the database (embedded or DATABASE_URL), migrated; user errors."""

from __future__ import annotations

import sys
from typing import NoReturn

import typer
from sqlalchemy import Engine

from db.engine import get_engine
from db.migrate import ensure_migrated
from ser.settings import get_settings


class UserError(Exception):
    """A problem the user can fix; printed as one line, exit code 2, no traceback."""


def fail(message: str, code: int = 2) -> NoReturn:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def open_database(*, migrate: bool = True) -> Engine:
    """The engine for DATABASE_URL or the embedded server, migrated to head unless told not to."""
    try:
        engine = get_engine(get_settings())
        if migrate:
            ensure_migrated(engine)
    except Exception as exc:  # noqa: BLE001 - connection problems are user-facing
        fail(f"cannot open the database: {exc}".splitlines()[0])
    return engine


def quiet_prefect() -> None:
    """Keep Prefect's ephemeral server local and its logging short."""
    import os

    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("PREFECT_SERVER_ALLOW_EPHEMERAL_MODE", "true")
    home = get_settings().home / "prefect"
    home.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("PREFECT_HOME", str(home))


def is_tty() -> bool:
    return sys.stderr.isatty()
