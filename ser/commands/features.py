"""`ser features [--set NAME] [--channel studio|telephony] [--augment/--no-augment] [--corpus C] [--workers N] [--dask-address A]`.

``--channel telephony`` also computes the phone-augmented companion ``rich+phone`` (copies of
each clip through a simulated line), which `ser train`'s defaults train on (``ser train``
computes whatever of both is missing itself).
"""

from __future__ import annotations

import json
from typing import Annotated

import typer
from sqlalchemy import Engine, text

from config import get_settings
from db.engine import session_scope
from ser.runtime import fail, flow_settings, is_tty, open_database, quiet_prefect


def features_cmd(
    set_name: Annotated[str, typer.Option("--set", help="Feature set: rich (default) or seed180.")] = "rich",
    channel: Annotated[str, typer.Option(
        help="studio, or telephony (8 kHz, 300-3400 Hz, what a phone line delivers; what "
             "`ser train` trains on by default).")] = "studio",
    augment: Annotated[bool, typer.Option(
        "--augment/--no-augment",
        help="With rich/telephony, also compute the phone-augmented copies (rich+phone) that "
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
    """
    from etl.features.specs import feature_spec
    from etl.runs.features import FeatureRunConfig

    engine = open_database()
    if list_sets:
        _list_sets(engine)
        return
    try:
        feature_spec(set_name, channel)
    except ValueError as exc:
        fail(str(exc))
    augment = augment and set_name == "rich" and channel == "telephony"
    settings = get_settings()
    dask_address = dask_address or settings.dask_address
    if dask_address and not use_prefect:
        fail("--dask-address needs the Prefect flow (drop --no-prefect)")
    config = FeatureRunConfig(set_name=set_name, channel=channel, corpus=corpus,
                              workers=workers or settings.workers, chunk_size=chunk_size,
                              retry_errors=retry_errors)
    progress = is_tty() or not as_json
    if use_prefect:
        quiet_prefect()  # before anything imports prefect
        from flows.features import features_flow

        with flow_settings():
            report = features_flow(config, dask_address=dask_address, augment=augment,
                                   progress=progress)
    else:
        from etl.runs.features import run_feature_sets

        report = run_feature_sets(engine, config, augment=augment, progress=progress)
    if as_json:
        typer.echo(json.dumps(report, indent=2))
        return
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
