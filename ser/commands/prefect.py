"""`ser prefect status | start | stop`: the background Prefect server commands reuse."""

from __future__ import annotations

import json
import os

import typer

from config import get_settings
from ser.prefect_server import (
    auth_string,
    check_server,
    running_server,
    start_server,
    stop_server,
)

prefect_app = typer.Typer(help="The local Prefect server flows report to.", no_args_is_help=True)


@prefect_app.command("status")
def status_cmd(
    as_json: bool = typer.Option(False, "--json", help="Print the health record as JSON."),
) -> None:
    """The Prefect server flows report to: health, version, schedules, the last server error.

    Exit code 0 when healthy, 1 when not running or unhealthy.
    """
    home = get_settings().prefect_home
    url = os.environ.get("PREFECT_API_URL")
    if url:
        health = check_server(url, source="PREFECT_API_URL",
                              auth=os.environ.get("PREFECT_API_AUTH_STRING"))
    else:
        info = running_server(home)
        if info is None:
            if as_json:
                typer.echo(json.dumps({"running": False}))
            else:
                typer.echo("not running (the next command that runs a flow starts it; "
                           "or: ser prefect start)")
            raise typer.Exit(1)
        health = check_server(info.api_url, source=f"background server (pid {info.pid})",
                              log=home / "server.log", auth=auth_string(home))
    ok = health.healthy and not health.problems
    if as_json:
        typer.echo(json.dumps({"running": True, "ok": ok, **health.as_dict()}, indent=2))
    else:
        typer.echo(f"running: {health.api_url} ({health.source})")
        typer.echo(f"health: {'ok' if ok else 'PROBLEM'}; Prefect {health.version or '?'}; "
                   f"{health.deployments if health.deployments is not None else '?'} deployments, "
                   f"{health.scheduled_runs if health.scheduled_runs is not None else '?'} "
                   "runs scheduled")
        for problem in health.problems:
            typer.echo(f"problem: {problem}")
        error = health.last_error
        if error is not None:
            typer.echo(f"last server error ({error.time}, {error.logger}): {error.message}"
                       + (f" -> {error.exception}" if error.exception else ""))
    if not ok:
        raise typer.Exit(1)


@prefect_app.command("start")
def start_cmd() -> None:
    """Start the local Prefect server now (commands otherwise start it on first use)."""
    home = get_settings().prefect_home
    info = start_server(home)
    typer.echo(f"running: {info.api_url} (pid {info.pid}); it requires the credentials in "
               f"{home / 'api-auth'}: export PREFECT_API_AUTH_STRING=\"$(cat {home / 'api-auth'})\" "
               "for Prefect's own CLI, or type them into the UI")


@prefect_app.command("stop")
def stop_cmd() -> None:
    """Stop the local Prefect server (the next flow starts it again)."""
    stopped = stop_server(get_settings().prefect_home)
    typer.echo("stopped" if stopped else "not running")


def register(app: typer.Typer) -> None:
    app.add_typer(prefect_app, name="prefect")
