"""One feature-extraction run: pending clips stream from PostgreSQL to workers and back. No Prefect.

`start_run` begins a run: it registers the feature set version, counts the pending clips and
starts a feeder thread that pages through them (keyset pages, so memory stays flat however many
clips there are) and submits chunks of ``(clip_id, path)`` to the workers (a local forkserver
process pool, in-process for one worker, or any ``submit`` such as a Dask task runner), at most
``max_ahead`` chunks ahead of what has been written. `run_features` writes each chunk's results
in its own transaction in this process (workers never need a database connection) and reports.

`ser features` starts its run *before* it imports Prefect: on two cores Prefect's import and
flow-run start take 3-5 s, as long as extracting all of RAVDESS, and the workers would sit idle
meanwhile. The flow then picks the run up (`take_started`), writes and reports everything, so a
vector reaches the database only inside the flow; the feature set row is the one write before it.

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
from dataclasses import asdict, dataclass
from functools import partial
from typing import Any

from tqdm import tqdm

from db.engine import get_engine, session_scope
from etl.features.specs import ClipResult, FeatureSpec, feature_spec
from etl.features.store import (
    clear_errors,
    count_pending,
    ensure_feature_set,
    pending_clips,
    store_results,
)
from etl.runs.pool import extract_chunk, local_pool

DEFAULT_CHUNK_SIZE = 32
# Chunks extracted but not yet written, at most: ~2,000 clips of results (~2 MB for rich), enough
# for the workers to run through Prefect's start-up, and independent of the corpus size.
MAX_AHEAD_CHUNKS = 64

Chunk = list[tuple[int, str]]


@dataclass(slots=True)
class FeaturesReport:
    """What one run did. ``started_before_s``: how long the workers ran before the writer (the
    flow) took the run over; 0 when the run started inside it."""

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
    started_before_s: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class RunKey:
    """What must match for a started run to be the one a flow asks for."""

    set_name: str
    channel: str
    corpus: str | None
    workers: int
    chunk_size: int


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


def _pages(engine: Any, *, feature_set_id: int, corpus: str | None, page: int) -> Iterator[Chunk]:
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
            ) -> Iterator[Chunk]:
    for rows in _pages(engine, feature_set_id=feature_set_id, corpus=corpus, page=chunk_size * 16):
        for i in range(0, len(rows), chunk_size):
            yield rows[i: i + chunk_size]


class FeatureRun:
    """A started extraction: a feeder thread submits pending chunks; `results` yields each
    chunk's results in order and lets the feeder run ``max_ahead`` chunks ahead of the caller."""

    def __init__(self, *, key: RunKey, spec: FeatureSpec, feature_set_id: int, pending: int,
                 engine: Any, submit: Callable[[Chunk], Any], pool: ProcessPoolExecutor | None,
                 max_ahead: int) -> None:
        self.key, self.spec, self.feature_set_id, self.pending = key, spec, feature_set_id, pending
        self.engine = engine
        self.started = time.perf_counter()
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
                                 corpus=self.key.corpus, chunk_size=self.key.chunk_size):
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


_STARTED: dict[RunKey, FeatureRun] = {}


def start_run(
    *,
    set_name: str = "rich",
    channel: str = "studio",
    corpus: str | None = None,
    workers: int = 2,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    retry_errors: bool = False,
    submit: Callable[[Chunk], Any] | None = None,
    max_ahead: int = MAX_AHEAD_CHUNKS,
    keep: bool = False,
) -> FeatureRun:
    """Register the feature set, count pending clips and start extracting them.

    ``submit(chunk) -> future`` runs `extract_chunk` somewhere; by default a local forkserver
    pool of ``workers`` processes (in-process for ``workers == 1``). ``keep=True`` parks the run
    for a later `run_features` with the same parameters (`take_started`).
    """
    spec = feature_spec(set_name, channel)
    engine = get_engine()
    with session_scope(engine) as session:
        fs_id = ensure_feature_set(session, spec)
        if retry_errors:
            clear_errors(session, feature_set_id=fs_id, corpus=corpus)
    with session_scope(engine) as session:
        pending = count_pending(session, feature_set_id=fs_id, corpus=corpus)
    pool: ProcessPoolExecutor | None = None
    if submit is None:
        if workers > 1 and pending:
            pool = local_pool(workers)
            submit = partial(pool.submit, extract_chunk, spec=spec)
        else:
            submit = partial(_Done.of, extract_chunk, spec=spec)
    key = RunKey(set_name, channel, corpus, workers, chunk_size)
    run = FeatureRun(key=key, spec=spec, feature_set_id=fs_id, pending=pending, engine=engine,
                     submit=submit, pool=pool, max_ahead=max_ahead)
    if keep:
        close_started()
        _STARTED[key] = run
    return run


def take_started(key: RunKey) -> FeatureRun | None:
    return _STARTED.pop(key, None)


def close_started() -> None:
    """Stop runs that were started but never taken (e.g. the flow could not start)."""
    for run in list(_STARTED.values()):
        run.close()
    _STARTED.clear()


def run_features(
    *,
    set_name: str = "rich",
    channel: str = "studio",
    corpus: str | None = None,
    workers: int = 2,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    retry_errors: bool = False,
    progress: bool = True,
    submit: Callable[[Chunk], Any] | None = None,
) -> FeaturesReport:
    """Compute feature set ``set_name``/``channel`` for every current clip that lacks it.

    Takes over a run `start_run(keep=True)` began with the same parameters (not with a custom
    ``submit`` or ``retry_errors``), else starts one. Results are written by this process, one
    transaction per chunk.
    """
    started = time.perf_counter()
    key = RunKey(set_name, channel, corpus, workers, chunk_size)
    run = None if (submit is not None or retry_errors) else take_started(key)
    started_before = started - run.started if run is not None else 0.0
    if run is None:
        run = start_run(set_name=set_name, channel=channel, corpus=corpus, workers=workers,
                        chunk_size=chunk_size, retry_errors=retry_errors, submit=submit)
    report = FeaturesReport(set_name, channel, run.feature_set_id, run.spec.n_features,
                            pending=run.pending, started_before_s=started_before)
    bar = tqdm(total=run.pending, unit="clip", desc=f"features {set_name}/{channel}",
               file=sys.stderr, disable=not progress or not run.pending, dynamic_ncols=True)
    try:
        for results in run.results():
            with session_scope(run.engine) as session:
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
