"""`ser demo`: the whole system end to end on synthetic data, on the embedded PostgreSQL."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated
from urllib.parse import unquote

import typer

from etl.features.specs import DEFAULT_SET
from ser.runtime import ensure_voice_encoder, fail, flow_settings, open_database, quiet_prefect


def demo_cmd(
    small: Annotated[bool, typer.Option(
        "--small", help="A tiny corpus and two short nights (a smoke test, ~40 s).")] = False,
    reports_dir: Annotated[Path | None, typer.Option(
        "--reports-dir", help="Where to write reports (default: $SER_REPORTS_DIR or "
                              "$SER_HOME/reports).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print what each step did as JSON.")] = False,
) -> None:
    """Run everything on synthetic data: corpus -> ingest -> features -> train -> calls -> score
    -> reports. No server and no data needed (DATABASE_URL unset = embedded PostgreSQL).

    Safe to run again: nothing is duplicated and the second run is quick.
    """
    started = time.perf_counter()
    engine = open_database()  # starts the embedded server when DATABASE_URL is unset; migrates
    typer.echo(f"[{time.perf_counter() - started:5.1f} s] database ready", err=True)
    ensure_voice_encoder([DEFAULT_SET], "telephony")
    quiet_prefect()
    from db.embedded import psql_url
    from etl.synthetic.demo import DEMO_QUERIES
    from flows.demo import DemoConfig, demo_flow

    typer.secho("ser demo: synthetic corpus -> model -> nightly calls -> reports "
                "(Prefect's local API server starts first)", bold=True, err=True)
    flow_started = time.perf_counter()
    try:
        with flow_settings():
            result = demo_flow(config=DemoConfig.small() if small else DemoConfig(),
                               reports_dir=str(reports_dir.resolve()) if reports_dir else None)
    except ValueError as exc:  # a data problem the user can act on (e.g. training data)
        fail(str(exc).splitlines()[0])
    url = unquote(psql_url(engine.url.render_as_string(hide_password=False)))
    if as_json:
        typer.echo(json.dumps({**result, "database_url": url}, indent=2, default=str))
        return
    wall = time.perf_counter() - started
    typer.echo(f"[{wall:5.1f} s] finished (flow {time.perf_counter() - flow_started:.1f} s)",
               err=True)
    typer.echo("")
    typer.secho(f"Done in {wall:.0f} s.", bold=True)
    typer.echo(f"Reports (open in any browser, works offline):\n  {result['index']}")
    typer.echo(f"\nThe database (psql-ready; `ser db url` prints it again):\n  {url}")
    typer.echo("\nThree queries to try (analytics views), e.g. psql \"$(ser db url)\" -c '...':")
    for title, sql in DEMO_QUERIES:
        typer.echo(f"\n-- {title}\n{sql}")


def register(app: typer.Typer) -> None:
    app.command("demo")(demo_cmd)
