"""Nightly scoring flows: one batch on demand, and the scheduled inbox run.

The flows only wire :func:`etl.runs.batch.score_batch` (which owns its per-call transactions and
its worker processes): one task per batch, not one per call, because Prefect's per-task
overhead would cost more than scoring a short call.

- :func:`score_batch_flow` scores one folder (``ser score PATH --prefect``).
- :func:`nightly_flow` scores whatever arrived in the inbox (``SER_INBOX``) since the
  last run: files already scored (or failed) with the same model version in an earlier batch
  are skipped unless their content changed (then scored again as a new version of the call);
  per-day subfolders and new files are picked up.
- ``flows.schedule`` puts ``nightly_flow`` on a cron schedule (``ser serve``).

A lost database is retried with backoff (:data:`DB_RETRY_DELAYS_S`; a retry resumes, nothing is
scored twice) before the task gives up. ``nightly_flow`` ends ``Failed`` when any call of the
batch failed (the report is still its result and its artifact), ``Completed`` otherwise.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from prefect import Task, flow, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NONE
from prefect.client.schemas.objects import TaskRun
from prefect.states import Completed, Failed, State

from config import get_settings
from db.analysts import enforce_analyst_policy
from db.engine import cached_engine
from etl.runs.batch import is_connection_error, score_batch
from etl.runs.inbox_confinement import confined_inbox
from etl.runs.outcomes import first_line
from etl.scoring.config import ScoringConfig
from etl.scoring.escalation import load_rules
from etl.scoring.role_prior import agent_prior_setting
from flows.database import database_url

DEPLOYMENT_NAME = "nightly-scoring"
# Waits before each retry of a batch whose database went away (a restart, a failover).
DB_RETRY_DELAYS_S = [30, 120, 480]


def _database_lost(_task: Task[..., Any], _run: TaskRun, state: State[Any]) -> bool:
    """Retry only a lost database; a bad calls.csv or a missing model will not fix itself."""
    try:
        state.result()
    except Exception as exc:  # noqa: BLE001 - the task's own exception, re-raised by result()
        return is_connection_error(exc)
    return False


def scoring_config(rules: str | None, *, retry_failed: bool = False,
                   stale_minutes: float = 30.0, settle_s: float = 0.0) -> ScoringConfig:
    """The scoring configuration of a flow run; ``rules`` None: ``SER_RULES`` (read here, at the
    flow's entry), else the model's operating point."""
    settings = get_settings()
    source = rules if rules is not None else settings.rules
    return ScoringConfig(rules=load_rules(source), retry_failed=retry_failed,
                         stale_claim_minutes=stale_minutes, settle_s=settle_s,
                         agent_negative_prior=agent_prior_setting(settings.agent_negative_prior))


@task(name="score-batch", cache_policy=NONE, retries=len(DB_RETRY_DELAYS_S),
      retry_delay_seconds=DB_RETRY_DELAYS_S, retry_condition_fn=_database_lost)
def score_batch_task(
    url: str,
    path: str,
    *,
    batch_date: dt.date,
    model_ref: str,
    workers: int,
    config: ScoringConfig,
    allowed_roots: tuple[Path, ...] = (),
    skip_done_elsewhere: bool = False,
    strict: bool = False,
    dask_address: str | None = None,
) -> dict[str, Any]:
    report = score_batch(cached_engine(url), Path(path), batch_date=batch_date,
                         model_ref=model_ref, workers=workers, config=config,
                         skip_done_elsewhere=skip_done_elsewhere, strict=strict,
                         allowed_roots=allowed_roots, dask_address=dask_address)
    return report.as_dict()


@task(name="analyst-limits", cache_policy=NONE)
def analyst_limits_task(url: str) -> list[str]:
    """Put back analyst limits their logins lifted on themselves (docs/operations.md); what was
    restored or could not be done, one item each."""
    with cached_engine(url).begin() as conn:
        report = enforce_analyst_policy(conn)
    return report.restored + [f"could not {skip}" for skip in report.skipped]


def outcome(report: dict[str, Any]) -> State[Any]:
    """``Failed`` when calls failed, else ``Completed``; the report is the state's data."""
    if report["n_failed"]:
        return Failed(message=f"{report['n_failed']} of {report['n_calls']} calls failed "
                      f"in batch {report['batch_id']}", data=report)
    return Completed(message=f"{report['n_scored']} calls scored", data=report)


def _publish(report: dict[str, Any]) -> None:
    """A Prefect table artifact with the batch counts (visible in the UI)."""
    keys = ("batch_id", "batch_date", "n_calls", "n_scored", "n_failed", "n_escalations",
            "audio_seconds", "wall_seconds")
    create_table_artifact(key="nightly-batch", table=[{k: report[k] for k in keys}],
                          description=f"batch {report['batch_id']} of {report['source_path']}")


@flow(name="score-batch", log_prints=True)
def score_batch_flow(
    path: str,
    batch_date: dt.date | None = None,
    model_ref: str = "production",
    workers: int | None = None,
    rules: str | None = None,
    retry_failed: bool = False,
    stale_minutes: float = 30.0,
    strict: bool = False,
    dask_address: str | None = None,
) -> dict[str, Any]:
    """Score every recording under ``path`` as one batch (idempotent, resumable); on the Dask
    cluster at ``dask_address`` (default ``SER_DASK_ADDRESS``) when one is given.

    Returns the report whatever happened to the calls (the caller judges ``n_failed``; the
    CLI turns it into exit code 1); the scheduled :func:`nightly_flow` ends Failed instead.
    """
    settings = get_settings()
    report = score_batch_task(
        database_url(), path, batch_date=batch_date or dt.date.today(), model_ref=model_ref,
        workers=workers or settings.workers,
        config=scoring_config(rules, retry_failed=retry_failed, stale_minutes=stale_minutes),
        allowed_roots=settings.batch_root_paths, strict=strict,
        dask_address=dask_address or settings.dask_address)
    _publish(report)
    return report


@flow(name="nightly-scoring", log_prints=True)
def nightly_flow(
    inbox: str | None = None,
    model_ref: str = "production",
    workers: int | None = None,
) -> State[Any]:
    """Score what arrived in the inbox since the last run, as today's batch (on the Dask
    cluster at ``SER_DASK_ADDRESS`` when set).

    A run's parameters come from whoever may create flow runs, so only the service's own
    settings choose what is read: ``inbox`` must be the configured inbox (``SER_INBOX``) or a
    folder inside it, ``workers`` can only lower ``SER_WORKERS``, and the rules (``SER_RULES``)
    and the Dask scheduler are not parameters. Analysts' limits are put back first.

    Ends ``Failed`` if any call failed (``Completed`` otherwise); the report dict is the result
    either way (``flow(..., return_state=True).result(raise_on_failure=False)``).
    """
    settings = get_settings()
    folder = confined_inbox(inbox, configured=settings.inbox_path)
    url = database_url()
    try:
        for line in analyst_limits_task(url):
            print(f"analyst limits: {line}")
    except Exception as exc:  # noqa: BLE001 - the night is scored even if this role may not
        print(f"analyst limits not checked: {first_line(exc)}")
    report = score_batch_task(
        url, str(folder), batch_date=dt.date.today(), model_ref=model_ref,
        workers=min(workers or settings.workers, settings.workers),
        config=scoring_config(None, settle_s=settings.inbox_settle_s),
        allowed_roots=settings.batch_root_paths, skip_done_elsewhere=True,
        dask_address=settings.dask_address)
    _publish(report)
    print(f"nightly batch {report['batch_id']}: {report['n_scored']} scored, "
          f"{report['n_failed']} failed, {report['n_escalations']} escalations")
    return outcome(report)
