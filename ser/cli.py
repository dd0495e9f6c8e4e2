"""The `ser` command: the front door to every flow."""

from __future__ import annotations

import importlib
import logging

import typer

app = typer.Typer(
    help="ser-analytics: speech-emotion analytics for call recordings, backed by PostgreSQL.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def _print_version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            typer.echo(f"ser-analytics {version('ser-analytics')}")
        except PackageNotFoundError:  # running from a source tree that was never installed
            typer.echo("ser-analytics (not installed)")
        raise typer.Exit()


@app.callback()
def options(
    verbose: int = typer.Option(0, "--verbose", "-v", count=True,
                                help="More log output: -v info, -vv debug."),
    log_level: str | None = typer.Option(None, "--log-level",
                                         help=f"Log level: {', '.join(LOG_LEVELS)} (wins over -v)."),
    version: bool = typer.Option(False, "--version", is_eager=True, callback=_print_version,
                                 help="Print the version and exit."),
) -> None:
    """ser-analytics: speech-emotion analytics for call recordings, backed by PostgreSQL."""
    level = "WARNING" if verbose == 0 else "INFO" if verbose == 1 else "DEBUG"
    if log_level is not None:
        if log_level.upper() not in LOG_LEVELS:
            raise typer.BadParameter(f"choose one of {', '.join(LOG_LEVELS)}",
                                     param_hint="--log-level")
        level = log_level.upper()
    logging.getLogger().setLevel(level)


# Each module owns one command group; a missing module must not break the others.
_COMMAND_MODULES = ("db", "ingest", "features", "train", "score", "serve", "report", "demo",
                    "prefect", "rules", "encoder", "review")

for _name in _COMMAND_MODULES:
    try:
        _module = importlib.import_module(f"ser.commands.{_name}")
    except ModuleNotFoundError as exc:
        if exc.name != f"ser.commands.{_name}":
            raise
        continue
    _module.register(app)


def main() -> None:  # pragma: no cover - the console script; tests call `app`
    logging.basicConfig(level=logging.WARNING)
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
