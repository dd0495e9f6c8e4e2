"""`ser ingest CORPUS [PATH] [--demographics CSV] [--votes CSV]`."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Annotated

import typer

from etl.corpora.parsers import CORPORA, FOLDER_CORPORA, MANIFEST, check_corpus
from ser.runtime import fail, flow_settings, is_tty, open_database, quiet_prefect

MAX_PROBLEM_LINES = 20


def ingest_cmd(
    corpus: Annotated[str, typer.Argument(help=f"Corpus: {', '.join(CORPORA)}.")],
    path: Annotated[Path | None, typer.Argument(
        help="Folder of audio files (searched recursively), or the manifest CSV.")] = None,
    demographics: Annotated[Path | None, typer.Option(
        "--demographics", help="CREMA-D VideoDemographics.csv (ActorID, Age, Sex, ...).")] = None,
    votes: Annotated[Path | None, typer.Option(
        "--votes", help="CREMA-D tabulatedVotes.csv (crowd ratings -> label confidence).")] = None,
    chunk_size: Annotated[int | None, typer.Option(
        min=1, help="Files per transaction (default 500).")] = None,
    workers: Annotated[int | None, typer.Option(
        min=1, help="Threads hashing files and reading headers.")] = None,
    strict: Annotated[bool, typer.Option(help="Exit 1 if any file or CSV row failed.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Ingest a labelled corpus: clips (by content hash), actors, crowd votes.

    Labels come from file names (ravdess, crema-d, tess, savee, emodb) or a manifest CSV.

    Manifest columns: path, emotion, speaker, optional sex, age; others are kept as JSON.

    Re-running adds nothing; a changed file becomes a new version; bad files go to ingest_errors.
    """
    from etl.corpora.ingest import DEFAULT_CHUNK_SIZE  # heavy (audio): only for this command
    from etl.corpora.ingest_run import IngestInputError

    try:
        corpus = check_corpus(corpus)
    except ValueError as exc:
        fail(str(exc))
    _check_inputs(corpus, path, demographics, votes)
    open_database()  # clean one-line error if the database is unreachable; migrates
    quiet_prefect()
    from flows.ingest import ingest_flow  # Prefect import is slow; keep `ser --help` fast

    try:
        with flow_settings():
            report = ingest_flow(
                corpus,
                path=str(path.resolve()) if path else None,
                demographics=str(demographics.resolve()) if demographics else None,
                votes=str(votes.resolve()) if votes else None,
                show_progress=is_tty() or not as_json,
                chunk_size=chunk_size or DEFAULT_CHUNK_SIZE,
                workers=workers,
            )
    except (IngestInputError, ValueError) as exc:
        fail(str(exc).splitlines()[0])
    total = report.total
    if as_json:
        typer.echo(json.dumps(report.as_dict(), indent=2))
    else:
        _print_summary(report)
    if total.failed and (strict or total.added + total.skipped + total.actors_added
                         + total.votes_added == 0):
        raise typer.Exit(1)


def _check_inputs(corpus: str, path: Path | None, demographics: Path | None,
                  votes: Path | None) -> None:
    """Fail fast (exit 2, one line) before starting Prefect or the database."""
    from etl.corpora.ingest import check_folder
    from etl.corpora.ingest_run import IngestInputError

    if (demographics or votes) and corpus != "crema-d":
        fail("--demographics/--votes read CREMA-D files; use them with corpus crema-d "
             "(other corpora's speakers come from file names, documentation or the manifest)")
    if path is None:
        if corpus == "crema-d" and (demographics or votes):
            pass
        else:
            fail(f"PATH is required for {corpus} (a folder of audio files"
                 f"{'; for manifest: the CSV file' if corpus == MANIFEST else ''})")
    elif corpus == MANIFEST:
        if not path.is_file():
            fail(f"manifest CSV does not exist: {path}")
    elif corpus in FOLDER_CORPORA:
        try:
            check_folder(path)
        except IngestInputError as exc:
            fail(str(exc))
    for option, csv_path in (("--demographics", demographics), ("--votes", votes)):
        if csv_path is not None and not csv_path.is_file():
            fail(f"{option} file does not exist: {csv_path}")


def _print_summary(report: object) -> None:
    from flows.ingest import IngestReport

    assert isinstance(report, IngestReport)
    t = report.total
    parts = []
    if report.clips is not None:
        dup = f" ({t.duplicates} duplicate content)" if t.duplicates else ""
        parts.append(f"{t.files_seen} files: {t.added} added ({t.new_versions} new versions), "
                     f"{t.skipped} already present{dup}, {t.failed} failed")
    elif t.failed:
        parts.append(f"{t.failed} rows failed")
    if report.demographics is not None or t.actors_added:
        parts.append(f"{t.actors_added} actors added")
    if report.demographics is not None:
        parts.append(f"{report.demographics.skipped} actors updated")
    if report.votes is not None:
        parts.append(f"{report.votes.added} vote rows added, {report.votes.skipped} updated")
    typer.echo(f"{report.corpus} (run {report.run_id}): " + "; ".join(parts))
    if t.problems:
        typer.echo("problems:")
        for p in t.problems[:MAX_PROBLEM_LINES]:
            where = f"{p.path}:{p.row_number}" if p.row_number is not None else p.path
            typer.echo(f"  {where}: {p.reason}")
        if len(t.problems) > MAX_PROBLEM_LINES:
            typer.echo(f"  ... and {len(t.problems) - MAX_PROBLEM_LINES} more "
                       f"(SELECT * FROM ingest_errors WHERE run_id = {report.run_id})")
        if len(t.problems) > 1:
            # Group by the reason's kind (text before any detail) so the tally stays short.
            kinds = Counter(p.reason.split(":")[0].split(" (")[0] for p in t.problems)
            typer.echo("by reason: " + "; ".join(f"{n} x {r}" for r, n in kinds.most_common(6)))


def register(app: typer.Typer) -> None:
    app.command("ingest")(ingest_cmd)
