"""One feature-extraction run: pending clips stream from PostgreSQL to workers and back. No Prefect.

`run_features` registers the feature set version, counts the pending clips and starts a feeder
thread that pages through them (keyset pages, so memory stays flat however many clips there are)
and submits chunks of ``(clip_id, path)`` to the workers (a local forkserver process pool,
in-process for one worker, or any ``submit`` such as a Dask task runner), at most ``max_ahead``
chunks ahead of what has been written. It writes each chunk's results in its own transaction in
this process (workers never need a database connection) and reports.

Idempotent: only clips with neither a vector nor a recorded error are pending, and writes are
``ON CONFLICT DO NOTHING``, so a rerun is a no-op and an interrupted run resumes.
"""

from __future__ import annotations

import queue
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import asdict, dataclass, replace
from functools import partial
from typing import Any

from sqlalchemy import Engine
from tqdm import tqdm

from db.engine import session_scope
from etl.features.specs import ClipResult, FeatureSpec, augmented_set_name, feature_spec
from etl.features.store import (
    clear_errors,
    count_pending,
    ensure_feature_set,
    pending_clips,
    store_results,
)
from etl.runs.pool import extract_chunk, local_pool

DEFAULT_CHUNK_SIZE = 32
# Chunks extracted but not yet written, at most: bounds the results held in memory (~2 MB for
# rich) independently of the corpus size, and enough that the workers seldom wait for the writer.
MAX_AHEAD_CHUNKS = 64

Chunk = list[tuple[int, str]]
Submit = Callable[[Chunk], Any]


@dataclass(frozen=True, slots=True)
class FeatureRunConfig:
    """What a feature run computes and with how many local workers.

    ``set_name``/``channel`` name the feature set (`etl.features.specs.feature_spec`);
    ``corpus`` restricts the clips (None: all current clips); ``workers`` local processes (1:
    in-process); ``chunk_size`` files per submitted chunk; ``retry_errors`` forgets this set's
    recorded errors first, so those clips are tried again.
    """

    set_name: str = "rich"
    channel: str = "studio"
    corpus: str | None = None
    workers: int = 2
    chunk_size: int = DEFAULT_CHUNK_SIZE
    retry_errors: bool = False


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
    segments: int = 0  # segment vectors of long clips (etl.features.extraction.LONG_CLIP_S)
    audio_s: float = 0.0
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class _Done:
    """An already-computed result with a future's ``result()`` (in-process, one worker)."""

    def __init__(self, value: Any) -> None:
        self._value = value

    def result(self) -> Any:
        return self._value

    @classmethod
    def of(cls, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> _Done:
        return cls(fn(*args, **kwargs))


class _FeedFailed:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


_END = object()


def _pages(engine: Engine, *, feature_set_id: int, corpus: str | None, page: int) -> Iterator[Chunk]:
    after = 0
    while True:
        with session_scope(engine) as session:
            rows = pending_clips(session, feature_set_id=feature_set_id, corpus=corpus,
                                 after_id=after, limit=page)
        if not rows:
            return
        yield rows
        after = rows[-1][0]


def _chunks(engine: Engine, *, feature_set_id: int, corpus: str | None, chunk_size: int
            ) -> Iterator[Chunk]:
    for rows in _pages(engine, feature_set_id=feature_set_id, corpus=corpus, page=chunk_size * 16):
        for i in range(0, len(rows), chunk_size):
            yield rows[i: i + chunk_size]


class FeatureRun:
    """A started extraction: a feeder thread submits pending chunks; `results` yields each
    chunk's results in order and lets the feeder run ``max_ahead`` chunks ahead of the caller."""

    def __init__(self, *, config: FeatureRunConfig, spec: FeatureSpec, feature_set_id: int,
                 pending: int, engine: Engine, submit: Submit, pool: ProcessPoolExecutor | None,
                 max_ahead: int) -> None:
        self.config, self.spec, self.feature_set_id = config, spec, feature_set_id
        self.pending, self.engine = pending, engine
        self._submit, self._pool = submit, pool
        self._slots = threading.Semaphore(max_ahead)
        self._queue: queue.Queue[Any] = queue.Queue()
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._feed, name="features-feeder", daemon=True)
        if pending:
            self._thread.start()
        else:
            self._queue.put(_END)

    def _feed(self) -> None:
        try:
            for chunk in _chunks(self.engine, feature_set_id=self.feature_set_id,
                                 corpus=self.config.corpus,
                                 chunk_size=self.config.chunk_size):
                while not self._slots.acquire(timeout=0.2):
                    if self._closed.is_set():
                        return
                if self._closed.is_set():
                    return
                self._queue.put(self._submit(chunk))
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, raised there
            self._queue.put(_FeedFailed(exc))
        finally:
            self._queue.put(_END)

    def results(self) -> Iterator[list[ClipResult]]:
        while True:
            item = self._queue.get()
            if item is _END:
                return
            if isinstance(item, _FeedFailed):
                raise item.exc
            results: list[ClipResult] = item.result()
            yield results
            self._slots.release()  # after the caller has written them

    def close(self) -> None:
        """Stop feeding, drop what is not written, stop the workers. Idempotent."""
        self._closed.set()
        if self._thread.is_alive():
            self._thread.join()
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if isinstance(item, Future):
                item.cancel()
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None


def _start_run(
    engine: Engine,
    config: FeatureRunConfig,
    *,
    submit: Submit | None = None,
    max_ahead: int = MAX_AHEAD_CHUNKS,
) -> FeatureRun:
    """Register the feature set, count pending clips and start extracting them.

    ``submit(chunk) -> future`` runs `extract_chunk` somewhere; by default a local forkserver
    pool of ``config.workers`` processes (in-process for one worker). The caller reads
    `FeatureRun.results` and closes the run.
    """
    spec = feature_spec(config.set_name, config.channel)
    with session_scope(engine) as session:
        fs_id = ensure_feature_set(session, spec)
        if config.retry_errors:
            clear_errors(session, feature_set_id=fs_id, corpus=config.corpus)
    with session_scope(engine) as session:
        pending = count_pending(session, feature_set_id=fs_id, corpus=config.corpus)
    pool: ProcessPoolExecutor | None = None
    if submit is None:
        if config.workers > 1 and pending:
            pool = local_pool(config.workers)
            submit = partial(pool.submit, extract_chunk, spec=spec)
        else:
            submit = partial(_Done.of, extract_chunk, spec=spec)
    return FeatureRun(config=config, spec=spec, feature_set_id=fs_id, pending=pending,
                      engine=engine, submit=submit, pool=pool, max_ahead=max_ahead)


def run_features(
    engine: Engine,
    config: FeatureRunConfig | None = None,
    *,
    progress: bool = True,
    submit: Submit | None = None,
    max_ahead: int = MAX_AHEAD_CHUNKS,
) -> FeaturesReport:
    """Compute the feature set of ``config`` for every current clip that lacks it.

    Results are written by this process, one transaction per chunk; see `_start_run` for
    ``submit`` and ``max_ahead``.
    """
    config = config or FeatureRunConfig()
    started = time.perf_counter()
    run = _start_run(engine, config, submit=submit, max_ahead=max_ahead)
    report = FeaturesReport(config.set_name, config.channel, run.feature_set_id,
                            run.spec.n_features, pending=run.pending)
    bar = tqdm(total=run.pending, unit="clip", desc=f"features {config.set_name}/{config.channel}",
               file=sys.stderr, disable=not progress or not run.pending, dynamic_ncols=True)
    try:
        for results in run.results():
            with session_scope(engine) as session:
                counts = store_results(session, feature_set_id=run.feature_set_id,
                                       results=results)
            report.stored += counts.stored
            report.errors += counts.errors
            report.segments += counts.segments
            report.audio_s += sum(r.audio_s for r in results)
            bar.update(len(results))
    finally:
        bar.close()
        run.close()
    report.seconds = time.perf_counter() - started
    return report


def run_feature_sets(
    engine: Engine,
    config: FeatureRunConfig,
    *,
    augment: bool = False,
    progress: bool = True,
    submit_for: Callable[[FeatureRunConfig], Submit] | None = None,
) -> dict[str, Any]:
    """`run_features` for ``config`` and, with ``augment``, its phone-augmented companion set
    (``rich+phone``: copies of each clip through a simulated phone line, what `ser train`
    trains telephony models on).

    ``submit_for(config)`` gives the ``submit`` of each set's run (default: local workers).
    Returns the first set's `FeaturesReport` as a dict, the companion's under ``"augmented"``.
    """
    configs = [config] + ([replace(config, set_name=augmented_set_name(config.set_name))]
                          if augment else [])
    reports = [run_features(engine, c, progress=progress,
                            submit=submit_for(c) if submit_for is not None else None).as_dict()
               for c in configs]
    report = reports[0]
    if augment:
        report["augmented"] = reports[1]
    return report
