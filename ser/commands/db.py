"""`ser db upgrade | downgrade REV | current | url | prune`, `ser db analyst add | limits`."""

from __future__ import annotations

import datetime as dt
import re
from urllib.parse import unquote

import typer
from sqlalchemy import text
from sqlalchemy.engine import make_url

from db.analysts import (
    ANALYST_ROLE,
    LIMIT_NAMES,
    PolicyReport,
    analyst_limits,
    effective_limits,
    enforce_analyst_policy,
    login_members,
    run_built,
    set_limits,
)
from db.embedded import psql_url
from db.engine import cached_engine, session_scope
from db.migrate import current_revision, downgrade, head_revision, upgrade
from db.passwords import scram_sha256
from ser.runtime import database_url, fail, open_database

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
    engine = cached_engine(database_url())
    typer.echo(unquote(psql_url(engine.url.render_as_string(hide_password=False))))


@db_app.command("prune")
def prune_cmd(
    segments_before: str = typer.Option(
        ..., "--segments-before", metavar="DATE",
        help="Delete the segments of calls whose call_date is before DATE (YYYY-MM-DD)."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
) -> None:
    """Delete old call segments; calls, summaries, events and the daily rollup stay."""
    from etl.scoring.rollup import count_prunable, prune_segments

    try:
        before = dt.date.fromisoformat(segments_before)
    except ValueError:
        fail(f"--segments-before {segments_before!r} is not a date (YYYY-MM-DD)")
    engine = open_database()
    with session_scope(engine) as session:
        n = count_prunable(session, before=before)
    if n == 0:
        typer.echo(f"no segments of calls before {before}")
        return
    if not yes:
        typer.confirm(f"delete {n:,} segments of calls before {before} (calls, summaries and "
                      "analytics.daily_trends keep them)?", abort=True)
    with session_scope(engine) as session:
        report = prune_segments(session, before=before)
    typer.echo(f"deleted {report.segments:,} segments of calls before {before}; "
               f"{report.frozen_rollup_rows:,} rollup rows kept as they are")


analyst_app = typer.Typer(help="Analyst logins (members of the read-only role ser_analyst).",
                          no_args_is_help=True)
db_app.add_typer(analyst_app, name="analyst")

_ROLE_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
def _policy_lines(report: PolicyReport) -> list[str]:
    """What enforcing the analyst policy changed or could not do, one line each."""
    lines = []
    if report.restored:
        lines.append("restored limits that logins had changed on themselves: "
                     + ", ".join(report.restored))
    if report.temp_revoked:
        lines.append("analysts may no longer create temporary tables in this database "
                     "(TEMPORARY revoked from PUBLIC)")
    lines += [f"warning: could not {skip}" for skip in report.skipped]
    return lines


@analyst_app.command("add")
def analyst_add_cmd(
    name: str = typer.Argument(..., help="Login name (lower case letters, digits, _)."),
    password: str = typer.Option(..., prompt=True, hide_input=True, confirmation_prompt=True,
                                 envvar="SER_ANALYST_PASSWORD",
                                 help="Password (prompted if not given; or SER_ANALYST_PASSWORD)."),
) -> None:
    """Create (or update) an analyst login with a password: member of ser_analyst, with its
    session limits. On the embedded server such logins must give their password."""
    if not _ROLE_NAME.match(name) or name in ("postgres", ANALYST_ROLE):
        fail(f"login name {name!r} is not allowed: use lower case letters, digits and _")
    if len(password) < 8:
        fail("the password must have at least 8 characters")
    engine = open_database()
    with engine.begin() as conn:
        if not conn.execute(text("SELECT 1 FROM pg_roles WHERE rolname = :r"),
                            {"r": ANALYST_ROLE}).first():
            fail(f"role {ANALYST_ROLE} does not exist (run `ser db upgrade` as a user who may "
                 "create roles)")
        exists = conn.execute(text("SELECT rolsuper FROM pg_roles WHERE rolname = :r"),
                              {"r": name}).first()
        if exists is not None and exists.rolsuper:
            fail(f"{name} is a superuser; analyst logins must not be")
        verb = "ALTER" if exists is not None else "CREATE"
        run_built(conn, conn.execute(text(
            f"SELECT format('{verb} ROLE %I LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE "
            "PASSWORD %L', :n, :p)"), {"n": name, "p": scram_sha256(password)}).scalar_one())
        conn.execute(text(f'GRANT {ANALYST_ROLE} TO "{name}"'))
        limits = analyst_limits(conn)
        set_limits(conn, name, limits)
        policy = enforce_analyst_policy(conn)
    for line in _policy_lines(policy):
        typer.echo(line, err=line.startswith("warning"))
    url = make_url_for(engine.url.render_as_string(hide_password=False), name)
    typer.echo(f"analyst login {name} {'updated' if exists is not None else 'created'} "
               f"(member of {ANALYST_ROLE}; "
               f"{', '.join(f'{k}={v}' for k, v in limits.items()) or 'no limits'})\n"
               f'connect: psql "{url}"')


def make_url_for(url: str, user: str) -> str:
    """``url`` for ``user`` without a password (nor the owner's password file), psql-ready."""
    return unquote(psql_url(make_url(url).set(username=user, password=None)
                            .difference_update_query(["passfile"])
                            .render_as_string(hide_password=False)))


@analyst_app.command("limits")
def analyst_limits_cmd(
    statement_timeout: str | None = typer.Option(
        None, help="Longest statement, e.g. 5min, 30s (0 = none)."),
    idle_timeout: str | None = typer.Option(
        None, "--idle-timeout", help="idle_in_transaction_session_timeout, e.g. 10min."),
    temp_file_limit: str | None = typer.Option(
        None, help="Temporary file space per session, e.g. 2GB (-1 = none; needs a superuser)."),
) -> None:
    """Show, or set, the session limits of ser_analyst and every analyst login (this database).

    Shows what each login's next session gets (a login that changed its own limits with ALTER
    ROLE is put back to ser_analyst's values first).
    """
    wanted = {k: v for k, v in zip(LIMIT_NAMES, (statement_timeout, idle_timeout,
                                                 temp_file_limit), strict=True) if v is not None}
    engine = open_database()
    try:
        with engine.begin() as conn:
            members = login_members(conn)
            if wanted:
                for role in (ANALYST_ROLE, *members):
                    set_limits(conn, role, wanted)
            policy = enforce_analyst_policy(conn)
            limits = analyst_limits(conn)
            effective = effective_limits(conn, members)
    except Exception as exc:  # noqa: BLE001 - a bad value or privilege is the user's to fix
        fail(str(getattr(exc, "orig", exc)).strip().splitlines()[0])
    for line in _policy_lines(policy):
        typer.echo(line, err=line.startswith("warning"))
    typer.echo(", ".join(f"{k}={limits.get(k, 'unset')}" for k in LIMIT_NAMES)
               + f" for {ANALYST_ROLE} and {len(members)} login(s)"
               + (f": {', '.join(members)}" if members else ""))
    for member in members:
        differs = {k: v for k, v in effective[member].items() if v != limits.get(k, v)}
        if differs:
            typer.echo(f"{member} gets " + ", ".join(f"{k}={v}" for k, v in differs.items()))


def register(app: typer.Typer) -> None:
    app.add_typer(db_app, name="db")
