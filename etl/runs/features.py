"""One feature-extraction run: pending clips stream from PostgreSQL to workers and back. No Prefect.

`run_features` registers the feature set version, counts the pending clips and starts a feeder
thread that pages through them (keyset pages, so memory stays flat however many clips there are)
and submits chunks of ``(clip_id, path)`` to the workers (a local forkserver process pool,
in-process for one worker, the Dask cluster at ``FeatureRunConfig.dask_address``, or any
``submit``), at most ``max_ahead`` chunks ahead of what has been written. It writes each
chunk's results in its own transaction in this process (workers never need a database
connection) and reports.

Idempotent: only clips with neither a vector nor a recorded error are pending, and writes are
``ON CONFLICT DO NOTHING``, so a rerun is a no-op and an interrupted run resumes.

On Dask (a plain ``distributed.Client``, as nightly scoring in ``etl.runs.cluster_scoring``)
cluster faults are not clip faults: an unreachable scheduler, a worker that cannot open a file this
process can read, Dask giving up on a chunk (``KilledWorker``) or a task failing outside the
extraction stop the run with a one-line ``etl.runs.cluster.ClusterError`` and store nothing for
the chunk at fault (chunks written before it are kept; its clips stay pending). A lost worker
is not a fault: Dask runs its chunks elsewhere. A bad clip is a per-clip error, as locally.
"""

from __future__ import annotations

import os
import queue
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import CancelledError, ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from functools import partial
from typing import TYPE_CHECKING, Any

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
from etl.runs.pool import (
    ChunkOutcome,
    extract_chunk,
    extract_chunk_on_worker,
    local_pool,
    open_error,
)

if TYPE_CHECKING:
    from distributed import Client
    from distributed import Future as DaskFuture

DEFAULT_CHUNK_SIZE = 32
# Chunks extracted but not yet written, at most: bounds the results held in memory (~2 MB for
# rich) independently of the corpus size, and enough that the workers seldom wait for the writer.
MAX_AHEAD_CHUNKS = 64
CONNECT_TIMEOUT_S = 10.0  # for the scheduler and its first worker (etl.runs.cluster.connect)
POLL_S = 1.0  # how often the scheduler connection is checked while waiting for a chunk

Chunk = list[tuple[int, str]]
Submit = Callable[[Chunk], Any]


@dataclass(frozen=True, slots=True)
class FeatureRunConfig:
    """What a feature run computes, and where.

    ``set_name``/``channel`` name the feature set (`etl.features.specs.feature_spec`);
    ``corpus`` restricts the clips (None: all current clips); ``workers`` local processes (1:
    in-process); ``dask_address`` the scheduler of a Dask cluster to run on instead (e.g.
    ``tcp://scheduler:8786``; ``workers`` is then unused); ``chunk_size`` files per submitted
    chunk; ``retry_errors`` forgets this set's recorded errors first, so those clips are tried
    again.
    """

    set_name: str = "rich"
    channel: str = "studio"
    corpus: str | None = None
    workers: int = 2
    chunk_size: int = DEFAULT_CHUNK_SIZE
    retry_errors: bool = False
    dask_address: str | None = None


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
            if not isinstance(item, _FeedFailed) and hasattr(item, "cancel"):
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


# --------------------------------------------------------------------------------------------
# On a Dask cluster
# --------------------------------------------------------------------------------------------


class _ClusterChunk:
    """A chunk submitted to Dask; `result` gives its `ClipResult` list like a local future, or
    raises `ClusterError` when the cluster (not a clip) is at fault."""

    def __init__(self, future: DaskFuture, chunk: Chunk, cluster: _Cluster) -> None:
        self.future, self.paths, self.cluster = future, dict(chunk), cluster

    def _clips(self) -> str:
        ids = sorted(self.paths)
        return f"clips {ids[0]}..{ids[-1]}" if len(ids) > 1 else f"clip {ids[0]}"

    def _outcome(self) -> ChunkOutcome:
        from etl.runs.cluster import ClusterError, task_fault

        address = self.cluster.address
        while True:
            try:
                outcome: ChunkOutcome = self.future.result(timeout=POLL_S)
                return outcome
            except TimeoutError as exc:
                if self.future.done():  # the task itself raised it
                    raise ClusterError(f"the Dask task of {self._clips()} failed outside the "
                                       f"extraction: TimeoutError: {exc}") from None
                if self.cluster.client.status in ("closing", "closed"):
                    raise ClusterError(f"lost the connection to the Dask scheduler at "
                                       f"{address}") from None
            except CancelledError:
                raise task_fault(None, what=self._clips(), doing="extracting them",
                                 stage="extraction", address=address, cancelled=True) from None
            except Exception as exc:  # noqa: BLE001 - raised by the task, not by a clip
                raise task_fault(exc, what=self._clips(), doing="extracting them",
                                 stage="extraction", address=address) from None

    def result(self) -> list[ClipResult]:
        from etl.runs.cluster import ClusterError

        outcome = self._outcome()
        self.future.release()
        for clip_id, why in outcome.unreadable.items():
            path = self.paths[clip_id]
            if open_error(path) is None:  # this process reads it: the worker is at fault
                raise ClusterError(
                    f"Dask worker {outcome.worker} cannot read {path} ({why}), which this "
                    "machine can: mount the audio at the same path on every worker")
        # what nobody can read is the clip's own fault: its decode error, as in the local path
        return outcome.results

    def cancel(self) -> None:
        self.future.cancel()


class _Cluster:
    """A connected ``distributed.Client`` and the ``submit`` of each run on it."""

    def __init__(self, client: Client, address: str) -> None:
        self.client, self.address = client, address

    def submit_for(self, config: FeatureRunConfig) -> Submit:
        spec = feature_spec(config.set_name, config.channel)

        def submit(chunk: Chunk) -> _ClusterChunk:
            key = f"features-chunk-{chunk[0][0]}-{os.urandom(4).hex()}"
            return _ClusterChunk(self.client.submit(extract_chunk_on_worker, chunk, spec=spec,
                                                    pure=False, key=key), chunk, self)

        return submit


@contextmanager
def _on_cluster(address: str, *, timeout_s: float) -> Iterator[_Cluster]:
    """Connected to the scheduler at ``address`` (with a worker) or `ClusterError` at once."""
    from etl.runs.cluster import connect

    client = connect(address, timeout_s=timeout_s)
    try:
        yield _Cluster(client, address)
    finally:
        client.close()


def run_features(
    engine: Engine,
    config: FeatureRunConfig | None = None,
    *,
    progress: bool = True,
    submit: Submit | None = None,
    max_ahead: int = MAX_AHEAD_CHUNKS,
    connect_timeout_s: float = CONNECT_TIMEOUT_S,
) -> FeaturesReport:
    """Compute the feature set of ``config`` for every current clip that lacks it.

    Results are written by this process, one transaction per chunk; see `_start_run` for
    ``submit`` and ``max_ahead``. With ``config.dask_address`` (and no ``submit``) the chunks
    run on that Dask cluster.

    Raises
    ------
    etl.runs.cluster.ClusterError
        On Dask: the scheduler unreachable within ``connect_timeout_s`` (nothing is
        registered), a worker that cannot read a file this process can, Dask giving up on a
        chunk, or the scheduler lost. No per-clip error is stored for it; rerun to resume.
    """
    config = config or FeatureRunConfig()
    if submit is None and config.dask_address:
        with _on_cluster(config.dask_address, timeout_s=connect_timeout_s) as cluster:
            return _run(engine, config, progress=progress, submit=cluster.submit_for(config),
                        max_ahead=max_ahead)
    return _run(engine, config, progress=progress, submit=submit, max_ahead=max_ahead)


def _run(engine: Engine, config: FeatureRunConfig, *, progress: bool, submit: Submit | None,
         max_ahead: int) -> FeaturesReport:
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
    connect_timeout_s: float = CONNECT_TIMEOUT_S,
) -> dict[str, Any]:
    """`run_features` for ``config`` and, with ``augment``, its phone-augmented companion set
    (``rich+phone``: copies of each clip through a simulated phone line, what `ser train`
    trains telephony models on).

    ``submit_for(config)`` gives the ``submit`` of each set's run (default: local workers, or
    one connection to the Dask cluster at ``config.dask_address`` for both sets). Returns the
    first set's `FeaturesReport` as a dict, the companion's under ``"augmented"``.
    """
    if submit_for is None and config.dask_address:
        with _on_cluster(config.dask_address, timeout_s=connect_timeout_s) as cluster:
            return run_feature_sets(engine, config, augment=augment, progress=progress,
                                    submit_for=cluster.submit_for)
    configs = [config] + ([replace(config, set_name=augmented_set_name(config.set_name))]
                          if augment else [])
    reports = [run_features(engine, c, progress=progress,
                            submit=submit_for(c) if submit_for is not None else None).as_dict()
               for c in configs]
    report = reports[0]
    if augment:
        report["augmented"] = reports[1]
    return report
