"""`ser prefect status | stop`: the background Prefect server commands reuse."""

from __future__ import annotations

import typer

from ser.prefect_server import running_server, start_server, stop_server
from ser.settings import get_settings

prefect_app = typer.Typer(help="The local Prefect server flows report to.", no_args_is_help=True)


@prefect_app.command("status")
def status_cmd() -> None:
    """Print the local Prefect server's API URL, or that none is running."""
    info = running_server(get_settings().home / "prefect")
    typer.echo(f"running: {info.api_url} (pid {info.pid})" if info else "not running")


@prefect_app.command("start")
def start_cmd() -> None:
    """Start the local Prefect server now (commands otherwise start it on first use)."""
    info = start_server(get_settings().home / "prefect")
    typer.echo(f"running: {info.api_url} (pid {info.pid})")


@prefect_app.command("stop")
def stop_cmd() -> None:
    """Stop the local Prefect server (the next flow starts it again)."""
    stopped = stop_server(get_settings().home / "prefect")
    typer.echo("stopped" if stopped else "not running")


def register(app: typer.Typer) -> None:
    app.add_typer(prefect_app, name="prefect")
