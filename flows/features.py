"""Features flow: compute one feature set for every current clip that lacks it.

The flow streams pending clips (keyset pages, so memory stays flat however many clips there
are), hands chunks of ``(clip_id, path)`` to worker processes (a local forkserver process pool,
or Prefect tasks on a Dask cluster via ``DaskTaskRunner`` with ``dask_address``), and
bulk-writes each returned chunk in its own transaction in the flow process (workers never need
a database connection).
Idempotent: only clips with neither a vector nor a recorded error are pending, and writes are
``ON CONFLICT DO NOTHING``, so a rerun is a no-op and an interrupted run resumes.
"""

from __future__ import annotations

import sys
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from functools import partial
from typing import Any

from prefect import flow, task
from prefect.cache_policies import NONE
from tqdm import tqdm

from db.engine import get_engine, session_scope
from etl.feature_store import (
    clear_errors,
    count_pending,
    ensure_feature_set,
    pending_clips,
    store_results,
)
from etl.features import ClipResult, extract_files, feature_spec
from flows.worker_pool import PREWARMED, local_pool

DEFAULT_CHUNK_SIZE = 32


@dataclass(slots=True)
class FeaturesReport:
    """What one run did."""

    feature_set: str
    channel: str
    feature_set_id: int
    n_features: int
    pending: int = 0
    stored: int = 0
    errors: int = 0
    audio_s: float = 0.0
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@task(name="extract-features-chunk", retries=1, cache_policy=NONE)
def extract_chunk(items: list[tuple[int, str]], set_name: str, channel: str) -> list[ClipResult]:
    """Decode and extract one chunk of files (runs in a worker process)."""
    return extract_files(items, feature_spec(set_name, channel))


def _pages(engine: Any, *, feature_set_id: int, corpus: str | None, page: int
           ) -> Iterator[list[tuple[int, str]]]:
    after = 0
    while True:
        with session_scope(engine) as session:
            rows = pending_clips(session, feature_set_id=feature_set_id, corpus=corpus,
                                 after_id=after, limit=page)
        if not rows:
            return
        yield rows
        after = rows[-1][0]


def _chunks(engine: Any, *, feature_set_id: int, corpus: str | None, chunk_size: int
            ) -> Iterator[list[tuple[int, str]]]:
    for rows in _pages(engine, feature_set_id=feature_set_id, corpus=corpus, page=chunk_size * 16):
        for i in range(0, len(rows), chunk_size):
            yield rows[i: i + chunk_size]


def run_features(
    *,
    set_name: str = "rich",
    channel: str = "studio",
    corpus: str | None = None,
    workers: int = 2,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    retry_errors: bool = False,
    progress: bool = True,
    submit: Callable[[list[tuple[int, str]]], Any] | None = None,
) -> FeaturesReport:
    """The work of `features_flow` without Prefect (also what the flow runs).

    ``submit(chunk) -> future`` runs `extract_chunk`'s body somewhere (a Dask/Prefect task
    runner); by default a local forkserver process pool of ``workers`` processes (or in-process
    for ``workers == 1``). Results are written by this process, one transaction per chunk.
    """
    started = time.perf_counter()
    spec = feature_spec(set_name, channel)
    engine = get_engine()
    with session_scope(engine) as session:
        fs_id = ensure_feature_set(session, spec)
        if retry_errors:
            clear_errors(session, feature_set_id=fs_id, corpus=corpus)
    with session_scope(engine) as session:
        pending = count_pending(session, feature_set_id=fs_id, corpus=corpus)
    report = FeaturesReport(set_name, channel, fs_id, spec.n_features, pending=pending)
    if pending == 0:
        for warm in PREWARMED.values():
            warm.shutdown(wait=False, cancel_futures=True)
        PREWARMED.clear()
        report.seconds = time.perf_counter() - started
        return report

    bar = tqdm(total=pending, unit="clip", desc=f"features {set_name}/{channel}",
               file=sys.stderr, disable=not progress, dynamic_ncols=True)
    # Bounded in-flight window: chunks stream from the database, results stream back to it,
    # so memory stays flat however many clips there are.
    max_in_flight = 2 * max(workers, 1)
    in_flight: deque[Any] = deque()

    def drain_one() -> None:
        results: list[ClipResult] = in_flight.popleft().result()
        with session_scope(engine) as session:
            stored, errors = store_results(session, feature_set_id=fs_id, results=results)
        report.stored += stored
        report.errors += errors
        report.audio_s += sum(r.audio_s for r in results)
        bar.update(len(results))

    pool: ProcessPoolExecutor | None = None
    if submit is None:
        if workers > 1:
            pool = PREWARMED.pop(workers, None) or local_pool(workers)
            submit = partial(pool.submit, extract_files, spec=spec)
        else:
            submit = partial(_Done.of, extract_files, spec=spec)
    try:
        for chunk in _chunks(engine, feature_set_id=fs_id, corpus=corpus, chunk_size=chunk_size):
            if len(in_flight) >= max_in_flight:
                drain_one()
            in_flight.append(submit(chunk))
        while in_flight:
            drain_one()
    finally:
        bar.close()
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    report.seconds = time.perf_counter() - started
    return report


class _Done:
    """An already-computed result with a future's ``result()`` (in-process, one worker)."""

    def __init__(self, value: Any) -> None:
        self._value = value

    def result(self) -> Any:
        return self._value

    @classmethod
    def of(cls, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> _Done:
        return cls(fn(*args, **kwargs))


@flow(name="features", log_prints=False)
def features_flow(
    set_name: str = "rich",
    channel: str = "studio",
    corpus: str | None = None,
    dask_address: str | None = None,
    workers: int | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    retry_errors: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Compute feature set ``set_name``/``channel`` for every current clip that lacks it.

    Parameters
    ----------
    corpus : restrict to one corpus (default: all)
    dask_address : ``tcp://host:port`` of a Dask scheduler: chunks run as Prefect tasks on
        the cluster via ``prefect_dask.DaskTaskRunner``. Default: local worker processes.
    workers : local worker processes (default: settings ``SER_WORKERS``)
    chunk_size : files per task
    retry_errors : forget recorded errors of this set first, so those clips are tried again

    Returns
    -------
    `FeaturesReport` as a dict.

    Notes
    -----
    Locally the chunks run on a forkserver process pool rather than as one Prefect task each:
    per-task orchestration (API round trips, spawning workers that re-import Prefect) cost
    more than extracting a chunk. On Dask each chunk is a Prefect task.
    """
    from ser.settings import get_settings

    workers = workers or get_settings().workers
    kwargs: dict[str, Any] = {
        "set_name": set_name, "channel": channel, "corpus": corpus, "workers": workers,
        "chunk_size": chunk_size, "retry_errors": retry_errors, "progress": progress}
    if not dask_address:
        return run_features(**kwargs).as_dict()
    from prefect_dask import DaskTaskRunner

    with DaskTaskRunner(address=dask_address) as runner:
        def submit(chunk: list[tuple[int, str]]) -> Any:
            return runner.submit(extract_chunk, parameters={
                "items": chunk, "set_name": set_name, "channel": channel})

        return run_features(**kwargs, submit=submit).as_dict()
