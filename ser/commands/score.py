"""`ser score PATH`, `ser calls generate OUT_DIR`."""

from __future__ import annotations

import datetime as dt
import errno
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from config import get_settings
from ser.runtime import fail, flow_settings, is_tty, open_database, quiet_prefect

if TYPE_CHECKING:
    from etl.scoring.escalation import EscalationRule

MAX_FAILURE_LINES = 20
# Exit codes of `ser score` (docs/operations.md): cron and schedulers tell the three apart.
EXIT_ALL_SCORED = 0
EXIT_CALLS_FAILED = 1
EXIT_COULD_NOT_RUN = 2
DISK_FULL_SQLSTATE = "53100"  # PostgreSQL's disk_full

calls_app = typer.Typer(help="Synthetic call recordings (tests, demo, benchmark).",
                        no_args_is_help=True)


def _parse_date(value: str | None) -> dt.date:
    if value is None:
        return dt.date.today()
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        fail(f"--batch-date {value!r} is not a date (YYYY-MM-DD)")


def score_cmd(
    path: Annotated[Path, typer.Argument(help="Folder of call recordings (searched recursively, "
                                         "calls.csv optional) or one recording.")],
    batch_date: str | None = typer.Option(None, "--batch-date", help="YYYY-MM-DD (default today)."),
    model: str | None = typer.Option(None, "--model", help="Alias, model version id, or "
                                     "name:version (default production)."),
    workers: int | None = typer.Option(None, min=1, help="Worker processes (default SER_WORKERS)."),
    rules: str | None = typer.Option(None, help="Escalation rules: a .json/.toml file or inline "
                                     "JSON (default SER_RULES, else the model's operating "
                                     "point)."),
    retry_failed: bool = typer.Option(False, help="Score again the calls that failed before."),
    strict: bool = typer.Option(
        False, "--strict", help="Refuse the whole batch (registering nothing) if any calls.csv "
        "row is bad, duplicated or points outside the batch folder, instead of failing that row."),
    stale_minutes: float = typer.Option(
        30.0, "--stale-minutes", min=0.0, hidden=True,
        help="Only for claims left by versions without claim leases: take those over after "
        "this many minutes. Claims of this version are free as soon as their run dies."),
    prefect: bool = typer.Option(False, "--prefect",
                                 help="Run as a Prefect flow run (adds Prefect's startup time)."),
    dask_address: str | None = typer.Option(
        None, "--dask-address", help="Score on the Dask cluster whose scheduler is at this "
        "address, e.g. tcp://scheduler:8786 (default SER_DASK_ADDRESS). Workers need the "
        "package and the audio at the same path, no database (docs/distributed.md)."),
    settle_seconds: float = typer.Option(
        0.0, "--settle-seconds", min=0.0,
        help="Leave recordings (and calls.csv) changed less than this many seconds ago for a "
        "later run: files still being copied in (the nightly inbox uses SER_INBOX_SETTLE_S)."),
    as_json: bool = typer.Option(False, "--json", help="Print the batch report as JSON."),
    recompute_summaries: bool = typer.Option(
        False, "--recompute-summaries", help="Do not score: recompute the summaries, "
        "conversation metrics and escalations (current rules) of the batch already scored "
        "from PATH on --batch-date, from its stored segments and a voice-activity pass over "
        "the audio (with --model: only that model's batch)."),
) -> None:
    """Score one batch of call recordings now and print a short summary.

    Re-running the same batch (same folder, date and model) adds nothing and resumes an
    interrupted run (a killed run's calls are taken over at once, a live run's never); another
    model version makes a separate batch. Only files inside PATH (or SER_BATCH_ROOTS) are read.

    Exit codes: 0 every call scored; 1 the run finished but some calls failed (reasons
    printed); 2 could not run (bad arguments or calls.csv, no model, database unreachable or
    lost, the Dask cluster unreachable or failing: rerun to resume).\f

    Longer than 60 lines only because Typer reads the command's options from this signature;
    the body is a short sequence of steps (rules, then recompute or score, then report).
    """
    from etl.scoring.escalation import load_rules
    from etl.scoring.role_prior import agent_prior_setting

    if not path.exists():
        fail(f"batch path does not exist: {path}")
    date = _parse_date(batch_date)
    settings = get_settings()
    rules = rules if rules is not None else settings.rules
    try:
        rule_list = load_rules(rules)
        agent_prior = agent_prior_setting(settings.agent_negative_prior)
    except ValueError as exc:
        fail(str(exc))
    if recompute_summaries:
        _recompute(path, date=date, model=model, rule_list=rule_list, as_json=as_json)
        return
    run = _BatchRun(path=path, date=date, model=model or "production",
                    workers=workers or settings.workers, rules=rules, rule_list=rule_list,
                    agent_negative_prior=agent_prior,
                    retry_failed=retry_failed, stale_minutes=stale_minutes,
                    settle_seconds=settle_seconds, strict=strict,
                    dask_address=dask_address or settings.dask_address,
                    allowed_roots=settings.batch_root_paths)
    report = _score(run, prefect=prefect)
    if as_json:
        typer.echo(json.dumps(report, indent=2))
    else:
        _print_report(report)
    if report["n_failed"]:
        raise typer.Exit(EXIT_CALLS_FAILED)


@dataclass(frozen=True)
class _BatchRun:
    """What ``ser score`` was asked to do, settings applied."""

    path: Path
    date: dt.date
    model: str
    workers: int
    rules: str | None
    rule_list: tuple[EscalationRule, ...] | None  # None: not configured
    agent_negative_prior: float | None
    retry_failed: bool
    stale_minutes: float
    settle_seconds: float
    strict: bool
    dask_address: str | None
    allowed_roots: tuple[Path, ...]


def _score(run: _BatchRun, *, prefect: bool) -> dict[str, Any]:
    """Score the batch directly or as a Prefect flow run; what stops the run exits 2."""
    from db.engine import describe_server
    from etl.features.voice.params import VoiceEncoderError
    from etl.runs.batch import DatabaseLostError, WorkerLostError, is_connection_error
    from etl.runs.cluster import ClusterError
    from etl.training.registry import ModelNotFoundError

    engine = open_database()
    try:
        if prefect:
            quiet_prefect()
            from flows.nightly import score_batch_flow

            with flow_settings():
                return score_batch_flow(
                    str(run.path.resolve()), batch_date=run.date, model_ref=run.model,
                    workers=run.workers, rules=run.rules, retry_failed=run.retry_failed,
                    stale_minutes=run.stale_minutes, strict=run.strict,
                    dask_address=run.dask_address)
        from etl.runs.batch import score_batch
        from etl.scoring.config import ScoringConfig

        return score_batch(
            engine, run.path, batch_date=run.date, model_ref=run.model, workers=run.workers,
            config=ScoringConfig(rules=run.rule_list, retry_failed=run.retry_failed,
                                 stale_claim_minutes=run.stale_minutes,
                                 settle_s=run.settle_seconds,
                                 agent_negative_prior=run.agent_negative_prior),
            progress=is_tty(), strict=run.strict, allowed_roots=run.allowed_roots,
            dask_address=run.dask_address).as_dict()
    except Exception as exc:
        full = _disk_full(exc, server=describe_server(engine.url))
        if full is not None:
            fail(full, code=EXIT_COULD_NOT_RUN)
        if isinstance(exc, DatabaseLostError | ModelNotFoundError | ClusterError
                      | VoiceEncoderError | WorkerLostError):
            fail(str(exc), code=EXIT_COULD_NOT_RUN)
        if isinstance(exc, ValueError):  # bad calls.csv, missing folder, --strict refusal
            fail(str(exc).splitlines()[0], code=EXIT_COULD_NOT_RUN)
        if is_connection_error(exc) or isinstance(exc, ClusterError | VoiceEncoderError):
            # e.g. raised inside the Prefect flow run
            fail(str(exc).splitlines()[0], code=EXIT_COULD_NOT_RUN)
        raise


_RESUMES = ("then rerun the same command: it resumes where this run stopped (calls already "
            "scored are kept)")


def _disk_full(exc: BaseException, *, server: str) -> str | None:
    """The one line for a run stopped by a full disk, the database's or this host's; else None.

    A full disk is no recording's fault, so it must not read as failed calls (exit code 1) or a
    bug (a traceback). The database's shows as SQLSTATE 53100 anywhere in the exception's chain;
    from a worker process only the message of its ``DatabaseLostError`` arrives, which quotes
    the server's ``No space left on device``.
    """
    from etl.runs.batch import DatabaseLostError

    no_space = os.strerror(errno.ENOSPC)
    todo: list[BaseException] = [exc]
    seen: set[int] = set()
    while todo:
        error = todo.pop()
        if id(error) in seen:
            continue
        seen.add(id(error))
        orig = getattr(error, "orig", None)
        for candidate in (error, orig):
            if getattr(candidate, "pgcode", None) == DISK_FULL_SQLSTATE:
                detail = (str(candidate).strip().splitlines() or [no_space])[0]
                return _database_disk_full(server, detail)
        if isinstance(error, OSError) and error.errno == errno.ENOSPC:
            where = f": {error.filename}" if error.filename else ""
            return (f"the disk of this host is full ({error.strerror or no_space}{where}); "
                    f"free space there, {_RESUMES}")
        todo.extend(e for e in (error.__cause__, error.__context__, orig)
                    if isinstance(e, BaseException))
    quoted = re.search(rf"\(([^()]*{re.escape(no_space)}[^()]*)\)", str(exc))
    if quoted is not None and isinstance(exc, DatabaseLostError):
        return _database_disk_full(server, quoted.group(1))
    return None


def _database_disk_full(server: str, detail: str) -> str:
    return f"the disk of the database {server} is full ({detail}); free space there, {_RESUMES}"


def _recompute(path: Path, *, date: dt.date, model: str | None,
               rule_list: tuple[EscalationRule, ...] | None, as_json: bool) -> None:
    """`ser score PATH --recompute-summaries`: the batch's summaries again, no re-scoring."""
    from db.engine import session_scope
    from etl.scoring.recompute import run_recompute
    from etl.training.registry import ModelNotFoundError, resolve_version

    engine = open_database()
    try:
        with session_scope(engine) as session:
            mv_id = resolve_version(session, model).id if model else None
    except ModelNotFoundError as exc:
        fail(str(exc), code=EXIT_COULD_NOT_RUN)
    report = run_recompute(lambda: session_scope(engine), batch_date=date,
                           source_path=str(path.expanduser().resolve()),
                           model_version_id=mv_id, rules=rule_list, progress=is_tty())
    if not report.batch_ids:
        fail(f"no scored calls from {path} on {date.isoformat()}"
             + (f" with model {model}" if model else "") + "; score them first",
             code=EXIT_COULD_NOT_RUN)
    if as_json:
        typer.echo(json.dumps(report.as_dict(), indent=2))
    else:
        typer.echo(f"recomputed {report.n_recomputed} of {report.n_calls} scored calls "
                   f"(batch{'es' if len(report.batch_ids) > 1 else ''} "
                   f"{', '.join(map(str, report.batch_ids))}): {report.n_escalations} "
                   f"escalations, {report.n_changed} calls changed their escalation")
        for key, reason in list(report.failures.items())[:MAX_FAILURE_LINES]:
            typer.echo(f"  failed {key}: {reason}")
    if report.failures:
        raise typer.Exit(EXIT_CALLS_FAILED)


def _print_report(report: dict[str, object]) -> None:
    audio = float(report["audio_seconds"])  # type: ignore[arg-type]
    wall = float(report["wall_seconds"])  # type: ignore[arg-type]
    # speed: only what this run scored (a resumed run did not score the earlier calls)
    run_audio = float(report.get("run_audio_seconds", audio))  # type: ignore[arg-type]
    run_scored = report.get("run_scored", report["n_scored"])
    speed = f", {run_audio / wall:.0f}x real time" if wall > 0 and run_audio > 0 else ""
    typer.echo(
        f"batch {report['batch_id']} ({report['batch_date']}, model version "
        f"{report['model_version_id']}): {report['n_calls']} calls, {report['n_scored']} scored, "
        f"{report['n_failed']} failed, {report['n_escalations']} escalations; "
        f"{audio / 60:.1f} min of audio; this run scored {run_scored} calls "
        f"({run_audio / 60:.1f} min) in {wall:.1f} s{speed}")
    waited = float(report.get("waited_seconds") or 0.0)  # type: ignore[arg-type]
    if waited >= 1.0:
        typer.echo(f"waited {waited:.0f} s for another run of this batch on this host (one run "
                   "per host scores a batch; this one then scored what was left)")
    deferred = report.get("n_deferred") or 0
    if deferred:
        typer.echo(f"{deferred} recordings were still being copied in (or their calls.csv was): "
                   "left for the next run")
    held = report.get("n_held", report["n_pending"])
    if held:
        typer.echo(f"{held} calls are being scored by another run that is still working; "
                   "they are its to finish (if it dies they are free at once: rerun)")
    failures = report.get("failures") or {}
    assert isinstance(failures, dict)
    for key, reason in list(failures.items())[:MAX_FAILURE_LINES]:
        typer.echo(f"  failed {key}: {reason}")
    if len(failures) > MAX_FAILURE_LINES:
        typer.echo(f"  ... and {len(failures) - MAX_FAILURE_LINES} more (SELECT call_key, error "
                   f"FROM analytics.calls WHERE batch_id = {report['batch_id']} AND status = "
                   "'failed')")


def _parse_actors(value: str | None) -> list[int] | None:
    if not value:
        return None
    actors: list[int] = []
    try:
        for part in value.split(","):
            if "-" in part:
                lo, hi = part.split("-", 1)
                actors.extend(range(int(lo), int(hi) + 1))
            elif part.strip():
                actors.append(int(part))
    except ValueError:
        fail(f"--actors {value!r}: use numbers and ranges, e.g. 17-20 or 1,3,5")
    return actors


@calls_app.command("generate")
def generate_cmd(
    out_dir: Annotated[Path, typer.Argument(
        help="Folder to write the calls, timelines and calls.csv.")],
    n_calls: int = typer.Option(10, "--n-calls", min=1, help="Number of calls."),
    minutes: float = typer.Option(2.0, "--minutes", min=0.1, help="Mean length of a call."),
    source: str = typer.Option("synth", "--source",
                               help="Folder of RAVDESS-named clips, or 'synth'."),
    actors: str | None = typer.Option(None, help="Actors to use, e.g. 17-20 (default all)."),
    seed: int = typer.Option(0, help="Random seed (same seed, same calls)."),
    wideband: bool = typer.Option(False, help="16 kHz, no telephone line simulation."),
) -> None:
    """Generate synthetic stereo calls (agent left, customer right) with ground truth."""
    from etl.synthetic.calls import CallGenConfig, generate_calls
    from etl.synthetic.clips import bank_from_source

    sr = 16000 if wideband else 8000
    try:
        bank = bank_from_source(source, sr=sr, actors=_parse_actors(actors))
        calls = generate_calls(out_dir, n_calls=n_calls, minutes=minutes, bank=bank, seed=seed,
                               config=CallGenConfig(sr=sr, telephony=not wideband),
                               progress=is_tty())
    except ValueError as exc:
        fail(str(exc))
    total = sum(c.duration_s for c in calls)
    scenarios: dict[str, int] = {}
    for c in calls:
        scenarios[c.scenario] = scenarios.get(c.scenario, 0) + 1
    typer.echo(f"{len(calls)} calls, {total / 60:.1f} min at {sr} Hz in {out_dir} "
               f"({', '.join(f'{k} {v}' for k, v in sorted(scenarios.items()))}); "
               f"ground truth in *.timeline.csv, metadata in calls.csv")


def register(app: typer.Typer) -> None:
    app.command("score")(score_cmd)
    app.add_typer(calls_app, name="calls")
