"""The `ser` command: the front door to every flow."""

from __future__ import annotations

import importlib
import logging
import sys

import typer

app = typer.Typer(
    help="ser-analytics: speech-emotion analytics for call recordings, backed by PostgreSQL.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)

# Each module owns one command group; a missing module must not break the others.
_COMMAND_MODULES = ("db", "ingest", "features", "train", "score", "serve", "report", "demo",
                    "prefect", "rules")

for _name in _COMMAND_MODULES:
    try:
        _module = importlib.import_module(f"ser.commands.{_name}")
    except ModuleNotFoundError as exc:
        if exc.name != f"ser.commands.{_name}":
            raise
        continue
    _module.register(app)


def main() -> None:  # pragma: no cover - the console script; tests call `app`
    from ser.runtime import finish

    logging.basicConfig(level=logging.WARNING)
    try:
        app()
    except SystemExit as exc:
        if exc.code is None or isinstance(exc.code, int):
            finish(exc.code or 0)
        print(exc.code, file=sys.stderr)  # sys.exit("message") prints it and exits 1
        finish(1)
    finish(0)


if __name__ == "__main__":  # pragma: no cover
    main()
