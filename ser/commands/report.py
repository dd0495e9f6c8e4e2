"""`ser report model REF | batch DATE | call ID | index | all`.

Reports are plain reads and template rendering, so these commands do not start Prefect (the
demo flow and ``flows.demo.reports_flow`` publish the same reports as Prefect artifacts). Every
command refreshes ``index.html`` so the folder always has a complete table of contents.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Annotated

import typer

from config import get_settings
from ser.runtime import fail, open_database

report_app = typer.Typer(help="Self-contained HTML reports (open offline in any browser).",
                         no_args_is_help=True)

OutOption = Annotated[Path | None, typer.Option(
    "--out", "-o", help="Reports folder (default: $SER_REPORTS_DIR or $SER_HOME/reports).")]
ExcerptOption = Annotated[bool, typer.Option(
    "--embed-excerpts", help="Copy each call's flagged stretch (up to 30 s of call audio) into "
    "its call report, for reports that travel without the recordings (docs/reviews.md).")]


def _out_dir(out: Path | None) -> Path:
    folder = (out or get_settings().reports_path).expanduser().resolve()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        fail(f"cannot write reports to {folder}: {exc.strerror}")
    return folder


def _run(kind: str, out: Path | None, build_one: object) -> None:
    """Open the database, build one report in a read-only transaction, refresh the index."""
    from db.engine import session_scope
    from reports import build
    from reports.queries import ReportNotFoundError

    folder = _out_dir(out)
    engine = open_database()
    try:
        with session_scope(engine) as session:
            path = build_one(session, folder)  # type: ignore[operator]
    except ReportNotFoundError as exc:
        fail(str(exc))
    index = build.index_report(folder)
    typer.echo(f"{kind} report: {path}")
    typer.echo(f"index:        {index}")


@report_app.command("model")
def model_cmd(
    ref: Annotated[str, typer.Argument(
        help="Model version: an id, NAME:VERSION, or an alias such as 'production'.")],
    out: OutOption = None,
) -> None:
    """Model report: data, speaker-independent scores, confusion, fairness, vs production."""
    from reports import build, queries

    def one(session: object, folder: Path) -> Path:
        mv_id = queries.resolve_model(session, ref)  # type: ignore[arg-type]
        return build.model_report(session, mv_id, folder)  # type: ignore[arg-type]

    _run("model", out, one)


@report_app.command("batch")
def batch_cmd(
    date: Annotated[str, typer.Argument(help="Batch date YYYY-MM-DD, or 'latest'.")],
    out: OutOption = None,
    calls: Annotated[str, typer.Option(
        help="Also write call reports: escalated | all | none.")] = "escalated",
) -> None:
    """Nightly batch report (and its escalated calls' timelines, linked from it)."""
    if calls not in ("escalated", "all", "none"):
        fail("--calls must be one of: escalated, all, none")
    if date != "latest":
        try:
            day: dt.date | None = dt.date.fromisoformat(date)
        except ValueError:
            fail(f"not a date: {date!r}; use YYYY-MM-DD or 'latest'")
    else:
        day = None
    from reports import build, queries

    def one(session: object, folder: Path) -> Path:
        nonlocal day
        if day is None:
            dates = queries.batch_dates(session)  # type: ignore[arg-type]
            if not dates:
                raise queries.ReportNotFoundError("no batches yet; score some calls with "
                                                  "`ser score PATH`")
            day = dates[-1]
        if calls != "none":
            ids = [int(i) for i in queries.batches_on(session, day)["id"]]  # type: ignore[arg-type]
            df = queries.batch_calls(session, ids)  # type: ignore[arg-type]
            df = df[df["status"] == "scored"]
            if calls == "escalated":
                df = df[df["escalated"].astype(bool)]
            for call_id in df["id"]:
                build.call_report(session, int(call_id), folder)  # type: ignore[arg-type]
        return build.batch_report(session, day, folder)  # type: ignore[arg-type]

    _run("batch", out, one)


@report_app.command("call")
def call_cmd(
    call: Annotated[str, typer.Argument(help="A calls.id, or a call key (newest batch wins).")],
    out: OutOption = None,
    embed_excerpts: ExcerptOption = False,
) -> None:
    """Call timeline: emotion over time per role, talk/silence/overtalk, the escalation."""
    from reports import build, queries

    def one(session: object, folder: Path) -> Path:
        call_id = queries.resolve_call(session, call)  # type: ignore[arg-type]
        return build.call_report(session, call_id, folder,  # type: ignore[arg-type]
                                 embed_excerpt=embed_excerpts)

    _run("call", out, one)


@report_app.command("index")
def index_cmd(out: OutOption = None) -> None:
    """Rebuild index.html listing every report in the folder."""
    from reports import build

    typer.echo(f"index: {build.index_report(_out_dir(out))}")


@report_app.command("all")
def all_cmd(
    out: OutOption = None,
    calls: Annotated[str, typer.Option(
        help="Call reports to write: escalated | all | none.")] = "escalated",
    embed_excerpts: ExcerptOption = False,
) -> None:
    """Every model and batch report (plus call reports) and the index."""
    if calls not in ("escalated", "all", "none"):
        fail("--calls must be one of: escalated, all, none")
    from db.engine import session_scope
    from reports import build

    folder = _out_dir(out)
    engine = open_database()
    with session_scope(engine) as session:
        written = build.build_all(session, folder, calls=calls, embed_excerpts=embed_excerpts)
    typer.echo(f"{len(written['model'])} model, {len(written['batch'])} batch and "
               f"{len(written['call'])} call reports in {folder}")
    typer.echo(f"index: {written['index'][0]}")


def register(app: typer.Typer) -> None:
    app.add_typer(report_app, name="report")
