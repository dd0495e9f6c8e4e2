"""Shared CLI plumbing: open the database (embedded or DATABASE_URL), migrated; user errors."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import NoReturn

import typer
from sqlalchemy import Engine

from config import get_settings
from db.engine import cached_engine, describe_server
from db.migrate import ensure_migrated
from flows.database import database_url


def fail(message: str, code: int = 2) -> NoReturn:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def open_database(*, migrate: bool = True) -> Engine:
    """The engine for DATABASE_URL or the embedded server, migrated to head unless told not to."""
    engine: Engine | None = None
    try:
        engine = cached_engine(database_url())
        if migrate:
            ensure_migrated(engine)
    except Exception as exc:  # noqa: BLE001 - connection problems are user-facing
        detail = str(getattr(exc, "orig", None) or exc).strip().splitlines() or [type(exc).__name__]
        where = f" {describe_server(engine.url)}" if engine is not None else ""
        fail(f"cannot open the database{where}: {detail[0]}")
    return engine


class _PrefectBelowWarning(logging.Filter):
    """Keeps Prefect's records below WARNING off a console handler; ser's own records pass."""

    def filter(self, record: logging.LogRecord) -> bool:
        return (record.levelno >= logging.WARNING
                or not (record.name == "prefect" or record.name.startswith("prefect.")))


def quiet_prefect() -> None:
    """Prepare Prefect for a CLI command that runs a flow: a quiet, local, reusable API server.

    Unless the user set ``PREFECT_API_URL`` (or ``SER_PREFECT_SERVER=ephemeral``), flows talk to a
    background Prefect server under ``$SER_HOME/prefect`` that later commands reuse (see
    ``ser/prefect_server.py``); if it cannot start, Prefect's ephemeral mode is the fallback.

    Flow and task runs log at Prefect's level (INFO unless ``PREFECT_LOGGING_LEVEL`` says
    otherwise), so their progress reaches the Prefect API (``prefect flow-run logs``, the UI);
    the console shows Prefect's warnings and errors only, whether Prefect's own console handler
    or ser's (``logging.basicConfig``, which Prefect then leaves in place) prints them.
    """
    from ser.prefect_server import PrefectServerError, auth_string, start_server

    settings = get_settings()
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    # Prefect's client-side telemetry too: call-centre machines should not phone home unasked
    # (and this network is closed). DO_NOT_TRACK=0 set by the user keeps it on.
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "WARNING")
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, _PrefectBelowWarning) for f in handler.filters):
            handler.addFilter(_PrefectBelowWarning())
    os.environ.setdefault("PREFECT_SERVER_ALLOW_EPHEMERAL_MODE", "true")
    # Prefect's default of 20 s is too short for an ephemeral server on two busy cores.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
    home = settings.prefect_home
    home.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("PREFECT_HOME", str(home))
    if os.environ.get("PREFECT_API_URL") or settings.prefect_server != "local":
        return
    try:
        os.environ["PREFECT_API_URL"] = start_server(home).api_url
        os.environ["PREFECT_API_AUTH_STRING"] = auth_string(home)
    except PrefectServerError as exc:
        typer.secho(f"warning: {exc}; using Prefect's ephemeral mode", err=True,
                    fg=typer.colors.YELLOW)


# Prefect reads either name (the second is its legacy alias).
_HEARTBEAT_ENV = ("PREFECT_FLOWS_HEARTBEAT_FREQUENCY", "PREFECT_RUNNER_HEARTBEAT_FREQUENCY")


@contextmanager
def flow_settings() -> Iterator[None]:
    """Prefect settings for a flow a CLI command runs in the foreground (after `quiet_prefect`).

    Flow-run heartbeats are off unless the user set their frequency: Prefect's heartbeat thread
    sleeps in 1 s steps and the flow run waits for it to stop, so every flow would end idling
    for part of a step. Heartbeats only feed zombie-run automations; a user who runs one sets
    the frequency and keeps them.
    """
    if any(os.environ.get(name) for name in _HEARTBEAT_ENV):
        yield
        return
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    with temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
        yield


def is_tty() -> bool:
    return sys.stderr.isatty()


def ensure_voice_encoder(set_names: list[str], channel: str, *, quiet: bool = False) -> None:
    """Install the voice encoder's weights (from the package index, once per virtualenv) when
    one of ``set_names`` needs them; exits (code 2, one line and the fix) when that fails."""
    from etl.features.specs import VOICE_SET, split_set_name

    if not any(split_set_name(name)[0] == VOICE_SET for name in set_names):
        return
    from etl.features.voice.params import VoiceEncoderError
    from etl.features.voice.weights import install_weights, weights_status

    if weights_status().ok:
        return
    say = (lambda _line: None) if quiet else (lambda line: typer.echo(f"voice encoder: {line}",
                                                                       err=True))
    try:
        install_weights(progress=say)
    except VoiceEncoderError as exc:
        fail(f"{VOICE_SET}/{channel} needs the voice encoder's weights: {exc}")
