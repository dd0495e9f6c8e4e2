"""`ser serve`: the nightly scoring deployment on a cron schedule, on a persistent Prefect server."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from config import Settings, get_settings
from ser.runtime import fail, open_database, quiet_prefect

# Present while systemd is the running init system (what sd_booted() checks): without it a unit
# is never started, whatever is written.
SYSTEMD_RUNTIME = Path("/run/systemd/system")


def serve_cmd(
    cron: str | None = typer.Option(None, help="Cron schedule (default SER_NIGHTLY_CRON, 0 2 * * *)."),
    inbox: Annotated[Path | None, typer.Option(
        help="Inbox folder (default SER_INBOX or SER_HOME/inbox).")] = None,
    model: str = typer.Option("production", "--model", help="Model reference to score with."),
    name: str = typer.Option("nightly-scoring", help="Deployment name."),
    workers: int | None = typer.Option(None, min=1, help="Worker processes per run."),
    rules: str | None = typer.Option(None, help="Escalation rules file or inline JSON (default "
                                     "SER_RULES, read at each run)."),
    install: bool = typer.Option(
        False, "--install", help="Write a systemd unit that runs this schedule as a service "
        "(survives reboots) instead of serving now."),
    unit_dir: Annotated[Path | None, typer.Option(
        help="Where --install writes the unit (default /etc/systemd/system as root, else "
        "~/.config/systemd/user).")] = None,
    force: bool = typer.Option(
        False, "--force", help="With --install: write the unit even where systemd is not "
        "running (e.g. while building an image)."),
) -> None:
    """Serve the nightly scoring flow on a cron schedule over the inbox (blocks; Ctrl-C stops).

    The schedule runs on a persistent Prefect server: PREFECT_API_URL if set, else the
    background server (`ser prefect status`). Prefect's temporary (ephemeral) server has no
    scheduler, so with SER_PREFECT_SERVER=ephemeral this refuses.
    """
    settings = get_settings()
    schedule = cron or settings.nightly_cron
    folder = (inbox.expanduser().resolve() if inbox else settings.inbox_path)
    if install:
        _check_cron(schedule)
        args = ["--cron", schedule, "--inbox", str(folder), "--model", model, "--name", name]
        args += ["--workers", str(workers)] if workers else []
        args += ["--rules", rules] if rules else []
        if not force and not SYSTEMD_RUNTIME.is_dir():
            fail(f"systemd is not running on this host ({SYSTEMD_RUNTIME} is missing), so a "
                 "unit would never start: run `ser serve` under this host's own supervisor, or "
                 "pass --force to write the unit anyway")
        _install_unit(args, settings=settings, unit_dir=unit_dir)
        return
    api_url, source = _connect_prefect(settings)
    _check_cron(schedule)
    from flows.schedule import serve

    folder.mkdir(parents=True, exist_ok=True)
    _settings_for_runs(inbox=folder, workers=workers, rules=rules)
    typer.echo(f"serving {name}: {schedule} over {folder}")
    typer.echo(f"Prefect server: {api_url} ({source}); runs: prefect flow-run ls, or the UI at "
               f"{api_url.removesuffix('/api')}")
    serve(name=name, cron=schedule, inbox=str(folder), model_ref=model)


def _settings_for_runs(*, inbox: Path, workers: int | None, rules: str | None) -> None:
    """Hand this command's options to the flow runs it executes through its environment (they
    run in child processes that read the settings), never through run parameters a caller of
    the Prefect API could change."""
    os.environ["SER_INBOX"] = str(inbox)
    if workers:
        os.environ["SER_WORKERS"] = str(workers)
    if rules:
        os.environ["SER_RULES"] = rules
        os.environ.pop("SER_ESCALATION_RULES", None)
    get_settings.cache_clear()


def _connect_prefect(settings: Settings) -> tuple[str, str]:
    """``(API URL, where it came from)`` of the persistent Prefect server, exported as
    PREFECT_API_URL; exits (code 2, one line) when there is none or the database is unreachable.

    Call it before Prefect is imported: its settings (the API URL) are fixed when it loads.
    """
    from ser.prefect_server import PrefectServerError, auth_string, serving_api

    open_database()
    try:
        api_url, source = serving_api(settings.prefect_home, mode=settings.prefect_server)
    except PrefectServerError as exc:
        fail(str(exc))
    os.environ["PREFECT_API_URL"] = api_url
    if source != "PREFECT_API_URL":  # the background server wants its credentials
        os.environ["PREFECT_API_AUTH_STRING"] = auth_string(settings.prefect_home)
    quiet_prefect()
    return api_url, source


def _check_cron(schedule: str) -> None:
    """Exit (code 2, one line) unless ``schedule`` is a cron expression Prefect accepts."""
    from prefect.client.schemas.schedules import CronSchedule

    try:
        CronSchedule(cron=schedule)
    except ValueError:
        fail(f"invalid cron expression {schedule!r} (e.g. '0 2 * * *' for 02:00)")


def _install_unit(serve_args: list[str], *, settings: Settings, unit_dir: Path | None) -> None:
    """Write the systemd unit that runs ``ser serve serve_args`` and say how to start it."""
    from ser.service import install_service

    service = install_service(serve_args=serve_args, home=settings.home, unit_dir=unit_dir)
    typer.echo(f"wrote {service.unit_path} (environment in {service.env_path}, mode 0600)")
    if service.user_unit:
        typer.echo(f"it runs as {_user_name()} (a user unit)")
    else:  # a system unit without User= runs as root
        typer.secho(f"warning: {service.unit_path.name} runs as root: to run it as another "
                    "account, add User=NAME under [Service] in the unit, and give NAME the "
                    f"home {settings.home} and read access to {service.env_path}", err=True,
                    fg=typer.colors.YELLOW)
    typer.echo("to start it now and at every boot:")
    for step in service.next_steps():
        typer.echo(f"  {step}")


def _user_name() -> str:
    import pwd

    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:  # a uid without a passwd entry (containers)
        return f"uid {os.geteuid()}"


def register(app: typer.Typer) -> None:
    app.command("serve")(serve_cmd)
