"""`ser serve`: the nightly scoring deployment on a cron schedule."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ser.runtime import fail, open_database, quiet_prefect


def serve_cmd(
    cron: str | None = typer.Option(None, help="Cron schedule (default SER_NIGHTLY_CRON, 0 2 * * *)."),
    inbox: Annotated[Path | None, typer.Option(
        help="Inbox folder (default SER_INBOX or SER_HOME/inbox).")] = None,
    model: str = typer.Option("production", "--model", help="Model reference to score with."),
    name: str = typer.Option("nightly-scoring", help="Deployment name."),
    workers: int | None = typer.Option(None, min=1, help="Worker processes per run."),
    rules: str | None = typer.Option(None, help="Escalation rules file or inline JSON."),
) -> None:
    """Serve the nightly scoring flow on a cron schedule over the inbox (blocks; Ctrl-C stops)."""
    from prefect.client.schemas.schedules import CronSchedule

    from ser.settings import get_settings

    schedule = cron or get_settings().nightly_cron
    try:
        CronSchedule(cron=schedule)
    except ValueError:
        fail(f"invalid cron expression {schedule!r} (e.g. '0 2 * * *' for 02:00)")
    open_database()
    quiet_prefect()
    from flows.schedule import serve

    typer.echo(f"serving {name}: {schedule} over {inbox or get_settings().inbox_path}")
    serve(name=name, cron=schedule, inbox=str(inbox) if inbox else None, model_ref=model,
          workers=workers, rules=rules)


def register(app: typer.Typer) -> None:
    app.command("serve")(serve_cmd)
