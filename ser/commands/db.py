"""`ser db upgrade | downgrade REV | current | url`."""

from __future__ import annotations

from urllib.parse import unquote

import typer

from db.embedded import psql_url
from db.engine import get_engine
from db.migrate import current_revision, downgrade, head_revision, upgrade
from ser.runtime import fail, open_database

db_app = typer.Typer(help="Database schema (Alembic) and connection.", no_args_is_help=True)


@db_app.command("upgrade")
def upgrade_cmd(revision: str = typer.Argument("head", help="Target revision.")) -> None:
    """Migrate the schema up to REVISION (default: head)."""
    engine = open_database(migrate=False)
    upgrade(engine, revision)
    typer.echo(f"schema at {current_revision(engine)}")


@db_app.command("downgrade")
def downgrade_cmd(revision: str = typer.Argument(..., help="Target revision, e.g. -1 or base.")) -> None:
    """Migrate the schema down to REVISION."""
    engine = open_database(migrate=False)
    try:
        downgrade(engine, revision)
    except Exception as exc:  # noqa: BLE001
        fail(f"downgrade to {revision!r} failed: {exc}".splitlines()[0])
    typer.echo(f"schema at {current_revision(engine) or 'base'}")


@db_app.command("current")
def current_cmd() -> None:
    """Print the current and head revisions."""
    engine = open_database(migrate=False)
    typer.echo(f"current: {current_revision(engine) or 'base'}\nhead:    {head_revision()}")


@db_app.command("url")
def url_cmd() -> None:
    """Print the connection URL (psql-ready)."""
    engine = get_engine()
    typer.echo(unquote(psql_url(engine.url.render_as_string(hide_password=False))))


def register(app: typer.Typer) -> None:
    app.add_typer(db_app, name="db")
