"""`ser features [--set NAME] [--channel studio|telephony] [--augment/--no-augment] [--corpus C] [--workers N] [--dask-address A]`.

``--channel telephony`` also computes the phone-augmented companion ``<set>+phone`` (copies of
each clip through a simulated line), which `ser train`'s defaults train on (``ser train``
computes whatever of both is missing itself).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated, Any

import typer
from sqlalchemy import Engine, text

from config import get_settings
from db.engine import session_scope
from etl.features.specs import DEFAULT_SET
from ser.commands.score import EXIT_COULD_NOT_RUN
from ser.runtime import (
    ensure_voice_encoder,
    fail,
    flow_settings,
    is_tty,
    open_database,
    quiet_prefect,
)

if TYPE_CHECKING:
    from etl.runs.features import FeatureRunConfig


def features_cmd(
    set_name: Annotated[str, typer.Option(
        "--set", help=f"Feature set: rich, richvoice (rich and a pretrained voice encoder's "
                      f"embedding) or seed180. Default: {DEFAULT_SET}.")] = DEFAULT_SET,
    channel: Annotated[str, typer.Option(
        help="studio, or telephony (8 kHz, 300-3400 Hz, what a phone line delivers; what "
             "`ser train` trains on by default).")] = "studio",
    augment: Annotated[bool, typer.Option(
        "--augment/--no-augment",
        help="With rich or richvoice on telephony, also compute the phone-augmented copies "
             "(<set>+phone) that "
             "`ser train` trains on.")] = True,
    corpus: Annotated[str | None, typer.Option(help="Only clips of this corpus.")] = None,
    workers: Annotated[int | None, typer.Option(
        min=1, help="Local worker processes (default SER_WORKERS).")] = None,
    dask_address: Annotated[str | None, typer.Option(
        help="Run on a Dask cluster, e.g. tcp://scheduler:8786 (default SER_DASK_ADDRESS).")] = None,
    chunk_size: Annotated[int, typer.Option(min=1, help="Files per task.")] = 32,
    retry_errors: Annotated[bool, typer.Option(
        help="Try clips again whose errors were recorded by an earlier run.")] = False,
    use_prefect: Annotated[bool, typer.Option(
        "--prefect/--no-prefect",
        help="Run as a Prefect flow (default) or directly, without Prefect.")] = True,
    list_sets: Annotated[bool, typer.Option("--list", help="List feature set versions and exit.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Compute a feature set for every ingested (current) clip that lacks it; store in PostgreSQL.

    Re-running is a no-op; an interrupted run resumes. Silent or too-short clips are recorded
    in feature_errors with the reason.

    Exit codes: 0 the run finished (clip errors are recorded, not fatal); 2 could not run (bad
    arguments, database unreachable, or the Dask cluster unreachable or failing: nothing is
    recorded against the clips, rerun to resume).
    """
    from etl.features.specs import feature_spec, has_phone_copies
    from etl.runs.features import FeatureRunConfig

    engine = open_database()
    if list_sets:
        _list_sets(engine)
        return
    try:
        feature_spec(set_name, channel)
    except ValueError as exc:
        fail(str(exc))
    augment = augment and has_phone_copies(set_name, channel)
    ensure_voice_encoder([set_name], channel, quiet=as_json)
    settings = get_settings()
    config = FeatureRunConfig(set_name=set_name, channel=channel, corpus=corpus,
                              workers=workers or settings.workers, chunk_size=chunk_size,
                              retry_errors=retry_errors,
                              dask_address=dask_address or settings.dask_address or None)
    progress = is_tty() or not as_json
    report = _run(engine, config, augment=augment, progress=progress, use_prefect=use_prefect)
    if as_json:
        typer.echo(json.dumps(report, indent=2))
    else:
        _print_report(report, config)


def _print_report(report: dict[str, Any], config: FeatureRunConfig) -> None:
    set_name, channel = config.set_name, config.channel
    rate = report["pending"] / report["seconds"] if report["seconds"] else 0.0
    typer.echo(f"{set_name}/{channel} (feature set {report['feature_set_id']}, "
               f"{report['n_features']} features): {report['stored']} stored, "
               f"{report['errors']} errors, {report['pending'] - report['stored'] - report['errors']} "
               f"skipped; {report['seconds']:.1f} s ({rate:.1f} clips/s)")
    if report.get("segments"):
        typer.echo(f"long clips: {report['segments']} speech segment vectors stored "
                   f"(clip_features rows with seg_end_s >= 0)")
    aug = report.get("augmented")
    if aug:
        typer.echo(f"{aug['feature_set']}/{channel} (feature set {aug['feature_set_id']}, phone-"
                   f"line copies): {aug['stored']} clips stored, {aug['errors']} errors; "
                   f"{aug['seconds']:.1f} s")


def _run(engine: Engine, config: FeatureRunConfig, *, augment: bool, progress: bool,
         use_prefect: bool) -> dict[str, Any]:
    """The run, as a flow or directly; a cluster fault is one line and exit code 2."""
    try:
        if not use_prefect:
            from etl.runs.features import run_feature_sets

            return run_feature_sets(engine, config, augment=augment, progress=progress)
        quiet_prefect()  # before anything imports prefect
        from flows.features import features_flow

        with flow_settings(), _cluster_faults_in_one_line():
            return features_flow(config, augment=augment, progress=progress)
    except Exception as exc:
        if config.dask_address:
            from etl.runs.cluster import ClusterError

            if isinstance(exc, ClusterError):
                fail(str(exc), code=EXIT_COULD_NOT_RUN)
        raise


class _NoClusterFaults(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "ClusterError" not in record.getMessage()


@contextmanager
def _cluster_faults_in_one_line() -> Iterator[None]:
    """Keep Prefect's traceback of a run a cluster fault stopped off the console: the command
    prints the fault in one line, and the flow run's logs in Prefect still hold it."""
    console = logging.getLogger().handlers  # Prefect's console handler is the root's
    drop = _NoClusterFaults()
    for handler in console:
        handler.addFilter(drop)
    try:
        yield
    finally:
        for handler in console:
            handler.removeFilter(drop)


def _list_sets(engine: Engine) -> None:
    with session_scope(engine) as session:
        rows = session.execute(text(
            "SELECT s.id, s.name, s.channel, s.version, cardinality(s.feature_names), "
            "left(s.params_hash, 12), s.created_at::date, "
            "(SELECT count(DISTINCT f.clip_id) FROM clip_features f WHERE f.feature_set_id = s.id "
            " AND f.seg_start_s = 0 AND f.seg_end_s = -1), "
            "(SELECT count(*) FROM feature_errors e WHERE e.feature_set_id = s.id), "
            "(SELECT count(*) FROM clip_features f WHERE f.feature_set_id = s.id "
            " AND f.seg_end_s >= 0) "
            "FROM feature_sets s ORDER BY s.name, s.channel, s.version")).all()
    if not rows:
        typer.echo("no feature sets yet: run `ser features`")
        return
    typer.echo(f"{'id':>4}  {'name':<10} {'channel':<10} {'ver':>3} {'n':>4}  {'hash':<12}  "
               f"{'created':<10} {'clips':>7} {'errors':>6} {'segments':>8}")
    for r in rows:
        typer.echo(f"{r[0]:>4}  {r[1]:<10} {r[2]:<10} {r[3]:>3} {r[4]:>4}  {r[5]:<12}  "
                   f"{r[6]!s:<10} {r[7]:>7} {r[8]:>6} {r[9]:>8}")


def register(app: typer.Typer) -> None:
    app.command("features")(features_cmd)
