"""The caller side of nightly scoring: engine, transactions and worker processes.

``etl.scoring`` holds the work (discover, register, claim, score, write, summarise) as functions
that take a session and never commit. This module owns the transactions around them: one short
transaction per claim and one per result, so a crash loses at most the call in hand (its claim
goes stale and another run takes it over). ``score_batch`` runs workers in processes that claim
calls from the database, so overlapping runs share the work instead of repeating it. It has no
Prefect dependency: ``ser score`` calls it directly and ``flows/nightly.py`` wraps it in a flow.
"""

from __future__ import annotations

import concurrent.futures as cf
import datetime as dt
import logging
import multiprocessing
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from sqlalchemy import Engine, text

from db.engine import make_engine, session_scope
from etl.audio import AudioError
from etl.scoring import (
    BatchReport,
    CallError,
    ScoringConfig,
    claim_next,
    discover_calls,
    finalise_batch,
    mark_failed,
    register_batch,
    score_recording,
    write_result,
)
from etl.vad import FrameAnalyser

if TYPE_CHECKING:
    from etl.registry import LoadedModel

log = logging.getLogger(__name__)

DEFAULT_CONFIG = ScoringConfig()


# --------------------------------------------------------------------------------------------
# Workers
# --------------------------------------------------------------------------------------------


@dataclass(slots=True)
class WorkerStats:
    worker: str
    scored: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)
    lost: list[int] = field(default_factory=list)  # claims taken over before we could write
    audio_seconds: float = 0.0


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{time.monotonic_ns() % 1_000_000}"


def run_worker(
    engine: Engine,
    *,
    batch_id: int,
    model: LoadedModel,
    config: ScoringConfig = DEFAULT_CONFIG,
    worker: str | None = None,
    max_calls: int | None = None,
    on_call: Callable[[int, str], None] | None = None,
) -> WorkerStats:
    """Claim and score calls of ``batch_id`` until none is left (or ``max_calls`` done).

    One short transaction per claim and one per result, so a crash loses at most the call in
    hand (its claim goes stale and another run takes it over).
    """
    stats = WorkerStats(worker or worker_name())
    stale = config.stale_claim_minutes * 60.0
    while max_calls is None or len(stats.scored) + len(stats.failed) < max_calls:
        with session_scope(engine) as session:
            claimed = claim_next(session, batch_id=batch_id, worker=stats.worker,
                                 stale_after_s=stale, retry_failed=config.retry_failed)
        if claimed is None:
            break
        try:
            result = score_recording(claimed.path, model=model,
                                     channel_roles=claimed.channel_roles, config=config)
        except (AudioError, CallError) as exc:
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            status = "failed"
        except Exception as exc:  # one bad recording must not stop the batch
            log.exception("unexpected error scoring %s", claimed.path)
            reason = f"unexpected {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            status = "failed"
        else:
            status = "scored"
        with session_scope(engine) as session:
            if status == "scored":
                ok = write_result(session, call_id=claimed.id, worker=stats.worker,
                                  model_version_id=model.model_version_id, result=result)
            else:
                ok = mark_failed(session, call_id=claimed.id, worker=stats.worker, reason=reason)
        if not ok:
            stats.lost.append(claimed.id)
        elif status == "scored":
            stats.scored.append(claimed.id)
            stats.audio_seconds += result.duration_s
        else:
            stats.failed.append(claimed.id)
        if on_call is not None:
            on_call(claimed.id, status)
    return stats


def warm_up(model: LoadedModel, *, sr: int = 8000, config: ScoringConfig = DEFAULT_CONFIG) -> None:
    """Run every stage once on a short synthetic signal.

    The first call through the feature code builds filter banks and FFT plans and touches lazy
    imports (~0.8 s); doing it in the parent before forking means every worker starts warm.
    """
    from etl.features import extract_segments

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
                    config: ScoringConfig) -> WorkerStats:
    """Entry point of a pool process: own engine, own model copy (nothing pickled from the DB)."""
    from threadpoolctl import threadpool_limits

    from etl.registry import load_model

    # BLAS/OpenMP threads would fight the other worker processes for the same cores.
    threadpool_limits(1)
    engine = make_engine(url, poolclass=_null_pool())
    try:
        with session_scope(engine) as session:
            model = load_model(session, str(model_version_id))
        return run_worker(engine, batch_id=batch_id, model=model, config=config)
    finally:
        engine.dispose()


def _null_pool() -> Any:
    from sqlalchemy.pool import NullPool

    return NullPool


# Heavy imports a worker needs; a forkserver imports them once, before forking workers.
_WORKER_PRELOAD = ["flows.batch_runner", "etl.scoring", "etl.features", "etl.registry", "etl.artifacts", "skops.io",
                   "sklearn.pipeline", "sklearn.linear_model", "sklearn.svm", "xgboost"]


def _pool_context(start_method: str = "auto") -> multiprocessing.context.BaseContext:
    """Process start method for the worker pool.

    ``auto``: plain fork (instant, the parent's imports and model come along) when this process
    is single-threaded; forkserver when other threads exist (e.g. inside a Prefect flow run),
    because forking a multi-threaded process can copy a lock some other thread holds.
    """
    if start_method == "auto":
        import threading

        start_method = "fork" if threading.active_count() == 1 else "forkserver"
    context = multiprocessing.get_context(start_method)
    if start_method == "forkserver":
        context.set_forkserver_preload(_WORKER_PRELOAD)  # type: ignore[attr-defined]
    return context


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
) -> BatchReport:
    """Score every recording under ``path`` with ``model_ref``; resumable and idempotent.

    ``workers`` > 1 runs that many processes, each claiming calls from the database, so two
    overlapping invocations (or a rerun after a crash) share the work instead of repeating it.
    """
    from etl.registry import load_model

    started = time.perf_counter()
    path = Path(path).expanduser().resolve()
    batch_date = batch_date or dt.date.today()
    entries = discover_calls(path, config=config)
    with session_scope(engine) as session:
        model = load_model(session, model_ref)
        batch_id = register_batch(
            session, source_path=source_path or str(path), batch_date=batch_date,
            model_version_id=model.model_version_id, entries=entries,
            options={**config.options(), "model_ref": model_ref},
            skip_done_elsewhere=skip_done_elsewhere)
        # what is left to do (a rerun of a finished batch starts no worker processes)
        total = session.execute(text(
            "SELECT count(*) FROM calls WHERE batch_id = :b AND (status = 'pending' OR "
            "(status = 'claimed' AND claimed_at < now() - make_interval(secs => :stale)) OR "
            "(:retry AND status = 'failed'))"),
            {"b": batch_id, "stale": config.stale_claim_minutes * 60.0,
             "retry": config.retry_failed}).scalar_one()
    # Choose the start method before tqdm starts its monitor thread (fork needs one thread).
    context = _pool_context(start_method) if workers > 1 and total > 1 else None
    if total:
        warm_up(model, config=config)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=total, desc="calls", unit="call", leave=False)
    if total == 0:
        pass
    elif context is None:
        run_worker(engine, batch_id=batch_id, model=model, config=config,
                   on_call=(lambda _i, _s: bar.update(1)) if bar is not None else None)
    else:
        url = engine.url.render_as_string(hide_password=False)
        with cf.ProcessPoolExecutor(max_workers=min(workers, total),
                                    mp_context=context) as pool:
            futures = [pool.submit(_process_worker, url, batch_id, model.model_version_id, config)
                       for _ in range(min(workers, total))]
            done_before = 0
            while True:
                finished, pending = cf.wait(futures, timeout=1.0)
                if bar is not None:
                    done_now = _count_done(engine, batch_id)
                    bar.update(done_now - done_before)
                    done_before = done_now
                if not pending:
                    break
            for future in finished:
                future.result()  # re-raise a worker crash (database down, ...)
    if bar is not None:
        bar.close()
    with session_scope(engine) as session:
        return finalise_batch(session, batch_id=batch_id,
                              wall_seconds=time.perf_counter() - started)


def _count_done(engine: Engine, batch_id: int) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text("SELECT count(*) FROM calls WHERE batch_id = :b AND "
                                     "status IN ('scored', 'failed')"), {"b": batch_id}).scalar_one())
