"""The caller side of nightly scoring: engine, transactions and worker processes.

``etl.runs.inbox`` (discover), ``etl.runs.claims`` (register, claim), ``etl.runs.leases`` (lease),
``etl.scoring.recording`` (score one recording, no database) and ``etl.runs.results`` (write a
claimed call's outcome, count the batch) hold the work as functions that never commit. This
module owns the transactions around them: one short transaction per claim and one per result,
so a crash loses at most the call in hand (its worker's lease ends with it, so the next run
takes the call at once). ``score_batch`` runs workers in processes that claim calls from the
database, so overlapping runs share the work instead of repeating it; one run per host at a
time (a second run on the same host waits its turn, then scores what is left). It has no
Prefect dependency: ``ser score`` calls it directly and ``flows/nightly.py`` wraps it in a flow.
"""

from __future__ import annotations

import concurrent.futures as cf
import ctypes
import datetime as dt
import logging
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
from sqlalchemy import Engine, text
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import URL
from sqlalchemy.pool import NullPool
from threadpoolctl import threadpool_limits
from tqdm import tqdm

from db.engine import describe_server, make_engine, session_scope
from db.models import ModelVersion
from etl.audio.decode import AudioError, read_info
from etl.audio.vad import NARROWBAND_MAX_SR, FrameAnalyser
from etl.features.extraction import extract_segments, require_extractable
from etl.runs.claims import ClaimedCall, claim_next, count_work
from etl.runs.cluster_scoring import score_claims_on_cluster
from etl.runs.host_turn import HostTurn
from etl.runs.inbox import discover_calls
from etl.runs.inbox_confinement import OUTSIDE, contained, relative_reason
from etl.runs.leases import Lease, LeaseLostError, worker_name
from etl.runs.outcomes import CallStatus, WorkerStats, first_line, is_host_fault
from etl.runs.registration import register_batch
from etl.runs.results import BatchReport, finalise_batch, write_outcome
from etl.scoring.audio_passes import CallError
from etl.scoring.config import ScoringConfig
from etl.scoring.recording import CallResult, score_recording
from etl.training.artifacts import load_bundle
from etl.training.channel_selection import resolve_scoring_model
from etl.training.loading import LoadedModel, feature_spec_for, load_model, load_version

log = logging.getLogger(__name__)

DEFAULT_CONFIG = ScoringConfig()


@dataclass(frozen=True, slots=True)
class Execution:
    """Where a run scores its claimed calls: ``workers`` local processes (``start_method``), or
    the Dask cluster whose scheduler is at ``dask_address`` (etl.runs.cluster); ``progress``
    shows a bar."""

    workers: int = 2
    start_method: str = "auto"
    dask_address: str | None = None
    progress: bool = False


@dataclass(frozen=True, slots=True)
class _BatchToScore:
    """The registered batch whose claims a run scores: its model version, folder and options."""

    batch_id: int
    model_version_id: int
    path: Path
    config: ScoringConfig
    allowed_roots: Sequence[Path]
    retry_before: dt.datetime | None


# --------------------------------------------------------------------------------------------
# Workers
# --------------------------------------------------------------------------------------------


class DatabaseLostError(RuntimeError):
    """The database went away during a run (a rerun resumes; nothing scored is lost)."""


class WorkerLostError(RuntimeError):
    """A worker process died mid-run (killed, e.g. by the out-of-memory killer): its claims
    die with it, a rerun resumes."""


@contextmanager
def _database_loss_as_one_line(url: URL | str) -> Iterator[None]:
    """Raise a lost database as :class:`DatabaseLostError` (one picklable line saying that a
    rerun resumes) rather than the driver's exception and its traceback."""
    try:
        yield
    except DatabaseLostError:
        raise
    except Exception as exc:
        if not is_connection_error(exc):
            raise
        detail = (str(getattr(exc, "orig", None) or exc).strip().splitlines()
                  or [type(exc).__name__])[0]
        raise DatabaseLostError(
            f"lost the database {describe_server(url)} ({detail}); rerun the same command when "
            "it is back: it resumes where this run stopped (calls already scored are kept)"
        ) from None


def is_connection_error(exc: BaseException) -> bool:
    """Whether ``exc`` means the database connection is gone (not a bug or bad data)."""
    if isinstance(exc, (DatabaseLostError, LeaseLostError, sa_exc.OperationalError,
                        sa_exc.InterfaceError)):
        return True
    return isinstance(exc, sa_exc.DBAPIError) and bool(exc.connection_invalidated)


def run_worker(
    engine: Engine,
    *,
    batch_id: int,
    model: LoadedModel,
    config: ScoringConfig = DEFAULT_CONFIG,
    worker: str | None = None,
    max_calls: int | None = None,
    on_call: Callable[[int, str], None] | None = None,
    root: Path | None = None,
    allowed_roots: Sequence[Path] = (),
    retry_before: dt.datetime | None = None,
) -> WorkerStats:
    """Claim and score calls of ``batch_id`` until none is left (or ``max_calls`` done).

    The worker holds a :class:`etl.runs.leases.Lease` for its lifetime, so its claims are free the
    moment it dies and are never taken while it lives. One short transaction per claim and one
    per result, so a crash loses at most the call in hand. With ``root``, a file that no longer
    resolves inside it (or ``allowed_roots``) is failed as outside the batch folder, unopened,
    and reasons name files relative to ``root``. With ``config.retry_failed``, calls that failed
    before ``retry_before`` (default: when this worker started) are tried again, once.
    """
    stats = WorkerStats(worker or worker_name())
    stale = config.stale_claim_minutes * 60.0
    base = None if root is None else (root.parent if root.is_file() else root)
    with Lease(engine, name=stats.worker) as lease:
        stats.worker = lease.owner
        retry = (retry_before or lease.started_at) if config.retry_failed else None
        while max_calls is None or len(stats.scored) + len(stats.failed) < max_calls:
            lease.check()
            with session_scope(engine) as session:
                claimed = claim_next(session, batch_id=batch_id, worker=lease.owner,
                                     stale_after_s=stale, retry_failed_before=retry)
            if claimed is None:
                break
            status, reason, result = _score_claimed(claimed, model=model, config=config,
                                                    root=root, allowed_roots=allowed_roots)
            if status != "scored" and base is not None:
                reason = relative_reason(reason, root=base)
            with session_scope(engine) as session:
                ok = write_outcome(session, call_id=claimed.id, worker=lease.owner,
                                   model_version_id=model.model_version_id, status=status,
                                   reason=reason, result=result)
            stats.record(claimed.id, status, written=ok,
                         audio_seconds=0.0 if result is None else result.duration_s)
            if on_call is not None:
                on_call(claimed.id, "scored" if status == "scored" else "failed")
    return stats


def _score_claimed(claimed: ClaimedCall, *, model: LoadedModel, config: ScoringConfig,
                   root: Path | None, allowed_roots: Sequence[Path],
                   ) -> tuple[CallStatus, str, CallResult | None]:
    """Score one claimed call: ``(status, reason, result)``, the result only when scored.

    A file that no longer resolves inside ``root`` (or ``allowed_roots``) is rejected unopened;
    a recording that cannot be scored fails with its reason, whatever it raised, except a
    fault of this host (:func:`is_host_fault`), which ends the run.
    """
    if root is not None and not contained(claimed.path, root=root, allowed_roots=allowed_roots):
        return "rejected", f"{OUTSIDE}: the file now resolves elsewhere", None
    try:
        result = score_recording(claimed.path, model=model, channel_roles=claimed.channel_roles,
                                 config=config)
    except (AudioError, CallError) as exc:
        return "failed", first_line(exc), None
    except OSError as exc:
        if is_host_fault(exc):
            raise
        log.exception("unexpected error scoring %s", claimed.call_key)
        return "failed", f"unexpected {type(exc).__name__}: {first_line(exc)}", None
    except Exception as exc:  # one bad recording must not stop the batch
        log.exception("unexpected error scoring %s", claimed.call_key)
        return "failed", f"unexpected {type(exc).__name__}: {first_line(exc)}", None
    return "scored", "", result


def warm_up(model: LoadedModel, *, sr: int = 8000, config: ScoringConfig = DEFAULT_CONFIG) -> None:
    """Run every stage once on a short synthetic signal.

    The first call through the feature code builds filter banks and FFT plans and touches lazy
    imports; doing it in the parent before forking means every worker starts warm.
    """
    rng = np.random.default_rng(0)
    t = np.arange(3 * sr) / sr
    signal = (0.2 * np.sin(2 * np.pi * 150 * t) * (1 + np.sin(2 * np.pi * 3 * t))
              + 0.01 * rng.standard_normal(len(t))).astype(np.float32)
    analyser = FrameAnalyser(sr, config.vad)
    analyser.feed(signal)
    analyser.regions()
    X, valid = extract_segments(signal, sr, model.feature_spec, [(0.5, 2.5)])
    if valid.any():
        model.predict_proba(X[valid])


def _process_worker(url: str, batch_id: int, model_version_id: int,
                    config: ScoringConfig, root: Path | None = None,
                    allowed_roots: Sequence[Path] = (),
                    retry_before: dt.datetime | None = None) -> WorkerStats:
    """Entry point of a pool process: own engine, own model copy (nothing pickled from the DB).

    A lost database is raised as :class:`DatabaseLostError` (one picklable line) rather than
    the driver's exception and its traceback.
    """
    _die_with_parent()
    # BLAS/OpenMP threads would fight the other worker processes for the same cores.
    threadpool_limits(1)
    engine = make_engine(url, poolclass=NullPool)
    try:
        with _database_loss_as_one_line(engine.url):
            with session_scope(engine) as session:
                model = load_model(session, str(model_version_id))
            return run_worker(engine, batch_id=batch_id, model=model, config=config, root=root,
                              allowed_roots=allowed_roots, retry_before=retry_before)
    finally:
        engine.dispose()


def _die_with_parent() -> None:
    """On Linux, end this worker when the run that started it is killed (even ``kill -9``).

    Still needed: a worker's one task scores calls until the batch is done, so an orphan would
    go on claiming and scoring under its own live lease, and the rerun that follows would wait
    for those calls instead of taking them at once. ``os._exit`` because a worker has no one to
    report to: an exception (or ``SystemExit``) would only be caught by the pool's worker loop.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # no prctl (unusual libc): orphans finish the batch
        return
    if os.getppid() == 1:  # the parent died before prctl took effect
        os._exit(1)


# Heavy imports a worker needs; a forkserver imports them once, before forking workers.
_WORKER_PRELOAD = ["etl.runs.batch", "etl.scoring.recording", "etl.features.extraction",
                   "etl.training.loading", "etl.training.artifacts", "skops.io",
                   "sklearn.pipeline", "sklearn.linear_model", "sklearn.svm", "xgboost"]


def _pool_context(start_method: str = "auto") -> multiprocessing.context.BaseContext:
    """Process start method for the worker pool.

    ``auto``: plain fork (instant, the parent's imports and model come along) when this process
    is single-threaded; forkserver when other threads exist (e.g. inside a Prefect flow run),
    because forking a multi-threaded process can copy a lock some other thread holds.
    """
    if start_method == "auto":
        start_method = "fork" if threading.active_count() == 1 else "forkserver"
    context = multiprocessing.get_context(start_method)
    if start_method == "forkserver":
        context.set_forkserver_preload(_WORKER_PRELOAD)  # type: ignore[attr-defined]
    return context


def batch_bandwidth(paths: Iterable[Path], *, sample: int = 8) -> str:
    """``"narrowband"`` when any of the first ``sample`` readable headers is at a phone rate.

    Chooses which channel's model scores the batch
    (``etl.training.channel_selection.resolve_scoring_model``); phone audio stored at a wideband
    rate is caught per call by
    :func:`etl.scoring.recording.score_recording`, which measures the band itself.
    """
    seen = 0
    for path in paths:
        try:
            info = read_info(path)
        except (AudioError, OSError):
            continue
        if info.sample_rate <= NARROWBAND_MAX_SR:
            return "narrowband"
        seen += 1
        if seen >= sample:
            break
    return "wideband"


@dataclass(frozen=True, slots=True)
class RunReport(BatchReport):
    """The batch's counts plus what this run did (a resumed run scores only the rest).

    ``run_audio_seconds / wall_seconds`` is this run's speed; ``n_held`` counts calls live
    runs still hold (not failures: those runs will finish them).
    """

    run_scored: int = 0
    run_failed: int = 0
    run_audio_seconds: float = 0.0
    n_held: int = 0
    n_rejected: int = 0
    n_deferred: int = 0  # recordings still being copied, left for the next run
    waited_for_turn: bool = False  # another run of this batch on this host was scoring
    waited_seconds: float = 0.0  # how long it waited for that run to finish


def score_batch(
    engine: Engine,
    path: Path,
    *,
    batch_date: dt.date | None = None,
    model_ref: str = "production",
    workers: int = 2,
    config: ScoringConfig = DEFAULT_CONFIG,
    skip_done_elsewhere: bool = False,
    source_path: str | None = None,
    progress: bool = False,
    start_method: str = "auto",
    strict: bool = False,
    allowed_roots: Sequence[Path] = (),
    dask_address: str | None = None,
) -> RunReport:
    """Score every recording under ``path`` with ``model_ref``; resumable and idempotent.

    ``workers`` > 1 runs that many processes, each claiming calls from the database, so
    overlapping invocations on different hosts (or a rerun after a crash) share the work
    instead of repeating it; on one host a second run waits for the first one's turn
    (:class:`etl.runs.host_turn.HostTurn`) and then scores only what is left. With
    ``dask_address`` the calls are scored on that Dask cluster instead (``workers`` unused;
    this process keeps the database, see :mod:`etl.runs.cluster_scoring`).
    Only files inside ``path`` (or ``allowed_roots``) are read; rejected ``calls.csv`` rows
    become failed calls (``strict``: refuse the batch instead, registering nothing).

    Raises
    ------
    ValueError
        ``path`` missing, a calls.csv without its columns, or (``strict``) a rejected row.
    DatabaseLostError
        The database went away; rerunning resumes.
    etl.runs.cluster.ClusterError
        The cluster failed the run (unreachable, a worker without the audio, lost workers);
        no call was blamed and rerunning resumes.
    """
    started = time.perf_counter()
    path = Path(path).expanduser().resolve()
    batch_date = batch_date or dt.date.today()
    execution = Execution(workers=workers, start_method=start_method,
                          dask_address=dask_address or None, progress=progress)
    with _database_loss_as_one_line(engine.url):
        entries = discover_calls(path, config=config, strict=strict, allowed_roots=allowed_roots,
                                 settle_s=config.settle_s)
        stale = config.stale_claim_minutes * 60.0
        with session_scope(engine) as session:
            # An alias resolves per channel: phone audio gets the telephony model, never
            # silently a studio one (ModelChannelError says how to get one).
            version = resolve_scoring_model(
                session, model_ref, bandwidth=batch_bandwidth(
                    e.path for e in entries if not (e.error or e.deferred or e.failure)),
                allow_channel_mismatch=config.allow_channel_mismatch)
            # what would stop every worker stops the run before it registers anything
            require_extractable(feature_spec_for(session, version.feature_set_id))
            load_bundle(bytes(version.artifact), expected_sha256=version.artifact_sha256)
            batch_id = register_batch(
                session, source_path=source_path or str(path), batch_date=batch_date,
                model_version_id=version.id, entries=entries,
                options={**config.options(), "model_ref": model_ref},
                skip_done_elsewhere=skip_done_elsewhere)
            # --retry-failed retries what failed before this run, once
            retry_before = (session.execute(text("SELECT now()")).scalar_one()
                            if config.retry_failed else None)
            # what is left to do (a rerun of a finished batch loads no model, starts no
            # workers)
            total, _held = count_work(session, batch_id=batch_id, stale_after_s=stale,
                                      retry_failed_before=retry_before)
        work = _BatchToScore(batch_id=batch_id, model_version_id=version.id, path=path,
                             config=config, allowed_roots=tuple(allowed_roots),
                             retry_before=retry_before)
        stats: list[WorkerStats] = []
        waited, waited_s = False, 0.0
        if total:
            with HostTurn(engine, batch_id=batch_id) as turn:
                waited, waited_s = turn.waited, turn.waited_s
                stats = _score_claims(engine, work, execution)
        with session_scope(engine) as session:
            report = finalise_batch(session, batch_id=batch_id,
                                    wall_seconds=time.perf_counter() - started)
            _claimable, held = count_work(session, batch_id=batch_id, stale_after_s=stale)
        base = {f.name: getattr(report, f.name) for f in fields(BatchReport)}
        return RunReport(**base, run_scored=sum(len(s.scored) for s in stats),
                         run_failed=sum(len(s.failed) for s in stats),
                         run_audio_seconds=sum(s.audio_seconds for s in stats), n_held=held,
                         n_rejected=sum(e.rejected and not e.deferred for e in entries),
                         n_deferred=sum(bool(e.deferred) for e in entries),
                         waited_for_turn=waited, waited_seconds=round(waited_s, 2))


def _score_claims(engine: Engine, work: _BatchToScore, execution: Execution) -> list[WorkerStats]:
    """Score what is claimable now (this host's turn is held): the model is loaded only when
    a run before this one on the host left work."""
    with session_scope(engine) as session:
        total, _held = count_work(session, batch_id=work.batch_id,
                                  stale_after_s=work.config.stale_claim_minutes * 60.0,
                                  retry_failed_before=work.retry_before)
        if not total:
            return []
        version = session.get(ModelVersion, work.model_version_id)
        assert version is not None
        model = load_version(session, version)
    if execution.dask_address:
        return score_claims_on_cluster(
            engine, batch_id=work.batch_id, model=model, config=work.config, path=work.path,
            allowed_roots=work.allowed_roots, retry_before=work.retry_before,
            address=execution.dask_address, progress=execution.progress)
    # Choose the start method before tqdm starts its monitor thread (fork needs one thread).
    context = (_pool_context(execution.start_method)
               if execution.workers > 1 and total > 1 else None)
    warm_up(model, config=work.config)
    bar = tqdm(total=total, desc="calls", unit="call", leave=False) if execution.progress else None
    try:
        if context is None:
            return [run_worker(
                engine, batch_id=work.batch_id, model=model, config=work.config, root=work.path,
                allowed_roots=work.allowed_roots, retry_before=work.retry_before,
                on_call=(lambda _i, _s: bar.update(1)) if bar is not None else None)]
        return _run_pool(engine, work, n_workers=min(execution.workers, total),
                         context=context, bar=bar)
    finally:
        if bar is not None:
            bar.close()


def _run_pool(engine: Engine, work: _BatchToScore, *, n_workers: int,
              context: multiprocessing.context.BaseContext, bar: tqdm | None) -> list[WorkerStats]:
    """``n_workers`` processes claim and score until the batch is done; the bar follows the
    database's count."""
    url = engine.url.render_as_string(hide_password=False)
    with cf.ProcessPoolExecutor(max_workers=n_workers, mp_context=context) as pool:
        futures = [pool.submit(_process_worker, url, work.batch_id, work.model_version_id,
                               work.config, work.path, tuple(work.allowed_roots),
                               work.retry_before)
                   for _ in range(n_workers)]
        done_before = 0
        while True:
            finished, pending = cf.wait(futures, timeout=1.0)
            if bar is not None:
                done_now = _count_done(engine, work.batch_id)
                bar.update(done_now - done_before)
                done_before = done_now
            if not pending:
                break
        # re-raise a worker's failure (database lost, ...) once every worker has stopped
        try:
            return [future.result() for future in finished]
        except BrokenProcessPool:
            raise WorkerLostError(
                f"a scoring worker process of batch {work.batch_id} died (killed, e.g. by the "
                "out-of-memory killer): what it held is free again; rerun to resume, with "
                "fewer --workers if memory is short") from None


def _count_done(engine: Engine, batch_id: int) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text("SELECT count(*) FROM calls WHERE batch_id = :b AND "
                                     "status IN ('scored', 'failed')"), {"b": batch_id}).scalar_one())
