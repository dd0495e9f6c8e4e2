"""Report builders: context -> render -> one self-contained HTML file.

Layout of a reports folder (``Settings.reports_path`` by default)::

    index.html                       every report, newest first
    model-<name>-v<version>.html     one per model version
    batch-<YYYY-MM-DD>.html          one per batch date
    calls/call-<id>.html             one per call

Each builder returns the path it wrote. Inside a Prefect flow run, each also publishes a link
artifact (nothing happens outside a flow, and Prefect is not imported for it). What each report
shows is shaped in ``reports.contexts``; the names re-exported here are what the CLI, the flows
and the tests import.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from sqlalchemy.orm import Session

from reports import queries
from reports.common import batch_file, call_file, model_file, publish_artifact, slug, write
from reports.contexts import (
    batch_context,
    call_context,
    escalation_window,
    index_context,
    model_context,
)
from reports.render import fmt_pct, render

__all__ = ["batch_context", "batch_file", "batch_report", "build_all", "call_context",
           "call_file", "call_report", "escalation_window", "index_report", "model_context",
           "model_file", "model_report", "publish_artifact", "slug"]


def model_report(session: Session, model_version_id: int, out_dir: Path) -> Path:
    """Write the model report for ``model_version_id``; return its path."""
    ctx = model_context(session, model_version_id)
    path = write(Path(out_dir), model_file(ctx["ov"]["name"], ctx["ov"]["version"]),
                 render("model.html.j2", ctx))
    publish_artifact(path, key=f"model-report-{ctx['ov']['name']}-v{ctx['ov']['version']}",
                     description=f"{ctx['title']}: UAR {fmt_pct(ctx['uar']['mean'])}")
    return path


def batch_report(session: Session, batch_date: dt.date | str, out_dir: Path) -> Path:
    """Write the nightly report for every batch on ``batch_date``; return its path."""
    day = dt.date.fromisoformat(batch_date) if isinstance(batch_date, str) else batch_date
    ctx = batch_context(session, day, Path(out_dir))
    path = write(Path(out_dir), batch_file(day), render("batch.html.j2", ctx))
    publish_artifact(path, key=f"batch-report-{day.isoformat()}",
                     description=f"{ctx['n_scored']} calls scored, {ctx['n_escalated']} escalated, "
                                 f"{ctx['n_failed']} failed")
    return path


def call_report(session: Session, call_id: int, out_dir: Path, *,
                embed_excerpt: bool = False) -> Path:
    """Write the timeline report of one call; return its path (``embed_excerpt``: copy the
    flagged stretch's audio into it, for reports that travel without the recordings)."""
    ctx = call_context(session, call_id, embed_excerpt=embed_excerpt)
    path = write(Path(out_dir), call_file(call_id), render("call.html.j2", ctx))
    publish_artifact(path, key=f"call-report-{call_id}", description=ctx["title"])
    return path


def index_report(session_or_out_dir: Session | Path | str, out_dir: Path | str | None = None) -> Path:
    """Write ``index.html`` listing every report in the folder; return its path.

    Accepts ``index_report(out_dir)`` and ``index_report(session, out_dir)`` (the index is built
    from the files on disk, so the session is not needed).
    """
    folder = Path(out_dir if out_dir is not None else session_or_out_dir)  # type: ignore[arg-type]
    folder.mkdir(parents=True, exist_ok=True)
    ctx = index_context(folder)
    path = write(folder, "index.html", render("index.html.j2", ctx))
    publish_artifact(path, key="reports-index", description=f"{ctx['subtitle']}")
    return path


def build_all(session: Session, out_dir: Path, *, calls: str = "escalated",
              max_calls: int = 200, embed_excerpts: bool = False) -> dict[str, list[Path]]:
    """Every model report, every batch report, call reports (``escalated``|``all``|``none``), index.

    Call reports are written before batch reports so a batch report links to them.
    """
    written: dict[str, list[Path]] = {"model": [], "batch": [], "call": [], "index": []}
    out_dir = Path(out_dir)
    for mv_id in queries.model_versions(session)["id"]:
        written["model"].append(model_report(session, int(mv_id), out_dir))
    for day in queries.batch_dates(session):
        if calls != "none":
            for call_id in _call_ids(session, day, calls=calls)[:max_calls]:
                written["call"].append(call_report(session, call_id, out_dir,
                                                   embed_excerpt=embed_excerpts))
        written["batch"].append(batch_report(session, day, out_dir))
    written["index"].append(index_report(out_dir))
    return written


def _call_ids(session: Session, day: dt.date, *, calls: str) -> list[int]:
    """Scored calls of the batches on ``day``: all of them, or (``escalated``) the escalated."""
    ids = queries.batches_on(session, day)["id"].tolist()
    df = queries.batch_calls(session, [int(i) for i in ids])
    df = df[df["status"] == "scored"]
    if calls == "escalated":
        df = df[df["escalated"].astype(bool)]
    return [int(i) for i in df["id"]]
