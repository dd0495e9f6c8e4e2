"""Nightly scoring on an existing Dask cluster: the database stays here, the audio work goes there.

:func:`score_claims_on_cluster` is the cluster counterpart of the local worker pool in
``etl.runs.batch``. This process (the *client*) keeps everything that touches PostgreSQL: it
claims calls under its own :class:`etl.runs.leases.Lease` (so every call is scored exactly once
and other hosts and runs share the batch through the same claims), submits
:func:`etl.scoring.recording.score_recording` for the claimed paths to the workers, at most
``max_in_flight`` at a time, and writes the results back several per transaction with the same
per-call function as the local path (:func:`etl.runs.results.write_outcome`).
The model is one task's result (:func:`_model_on_worker`, the object this process loaded from
the verified artifact, never bytes pickled from the database): a worker fetches it once for its
calls, and if every worker holding it dies the scheduler recomputes it from the task, where
scattered data would be lost with its worker and take the calls waiting on it along.

A worker needs the package and read access to the audio at the same path as this process; it
needs no database connection (docs/distributed.md). Its first call gives its process back
glibc's usual mmap threshold, which the trim threshold Dask's nanny sets had frozen
(:func:`etl.runs.pool.adaptive_mmap_threshold`). What a worker runs for one call is
``etl.runs.cluster_worker``; reaching the cluster and its :class:`ClusterError` are
``etl.runs.cluster``.

Cluster faults are not call faults. A genuinely bad recording (``AudioError``/``CallError`` on
a worker that can read it) fails that call, as in the local path. These fail the *run* with a
one-line :class:`ClusterError` and store no per-call error; the calls this run still held are
put back to pending, so a later run scores them:

- the scheduler cannot be reached (or has no workers) within ``connect_timeout_s``;
- a worker cannot open a file that this process can (a missing or different mount);
- Dask gives up on a call (``KilledWorker``: workers died running it ``allowed-failures``
  times; a single lost worker is not a fault, Dask runs its tasks elsewhere), or a task fails
  for any reason outside ``score_recording`` (the package missing on a worker, ...);
- the connection to the scheduler is lost;
- the cluster has had no worker for ``no_workers_timeout_s`` while calls wait (the last worker
  died or left and nothing restarted it).
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Engine

from db.engine import session_scope
from etl.runs.claims import ClaimedCall, claim_calls, release_claims
from etl.runs.cluster import (
    CONNECT_TIMEOUT_S,
    NO_WORKERS_TIMEOUT_S,
    ClusterError,
    WorkerWatch,
    connect,
    task_fault,
)
from etl.runs.cluster_worker import CallOutcome, score_on_worker
from etl.runs.inbox_confinement import OUTSIDE, contained, relative_reason
from etl.runs.leases import Lease, worker_name
from etl.runs.outcomes import CallStatus, WorkerStats, first_line
from etl.runs.pool import open_error
from etl.runs.results import write_outcome
from etl.scoring.config import ScoringConfig
from etl.scoring.recording import CallResult

if TYPE_CHECKING:
    from distributed import Client, Future

    from etl.training.loading import LoadedModel

log = logging.getLogger(__name__)

DEFAULT_CONFIG = ScoringConfig()

# Results buffered before a write transaction (also written when FLUSH_S has passed or
# nothing is left in flight): fewer commits without holding results back for long.
WRITE_BATCH = 8
FLUSH_S = 1.0
POLL_S = 1.0  # how often the lease and the scheduler connection are checked while waiting
THREADS_EVERY_S = 5.0  # how often the cluster's size is asked for


def _threads(client: Client) -> int:
    """Threads of the cluster's workers now (one round trip to the scheduler)."""
    return max(1, sum(client.nthreads().values()))


def _unreadable_here(path: Path) -> str | None:
    """Why this process cannot open ``path`` (the local path's reason), or None if it can."""
    if not path.is_file():
        return f"file not found: {path}"  # score_recording's words
    cannot = open_error(path)
    return None if cannot is None else f"cannot read {path}: {cannot}"


def _task_fault(call: ClaimedCall, future: Future, address: str) -> ClusterError:
    cancelled = future.status == "cancelled"
    return task_fault(None if cancelled else future.exception(), what=f"call {call.call_key}",
                      doing="scoring it", stage="recording", address=address,
                      cancelled=cancelled)


@dataclass(slots=True)
class _Finished:
    """A call done on the cluster (or rejected here), waiting for the next write transaction."""

    call: ClaimedCall
    status: CallStatus
    worker: str
    result: CallResult | None = None
    reason: str = ""


class _ClusterRun:
    """One client run: claims in, futures out, results written back in small bulks."""

    def __init__(self, engine: Engine, client: Client, *, lease: Lease, batch_id: int,
                 model: LoadedModel, model_future: Future, config: ScoringConfig,
                 root: Path | None, allowed_roots: Sequence[Path], address: str,
                 retry_before: dt.datetime | None,
                 on_call: Callable[[int, str], None] | None,
                 no_workers_timeout_s: float = NO_WORKERS_TIMEOUT_S) -> None:
        self.engine, self.client, self.lease = engine, client, lease
        self.batch_id, self.model, self.model_future = batch_id, model, model_future
        self.config, self.root, self.allowed_roots = config, root, allowed_roots
        self.base = None if root is None else (root.parent if root.is_file() else root)
        self.address, self.on_call = address, on_call
        self.retry = (retry_before or lease.started_at) if config.retry_failed else None
        self.in_flight: dict[Future, ClaimedCall] = {}
        self.done: list[_Finished] = []
        self.stats: dict[str, WorkerStats] = {}
        self.exhausted = False
        self.last_flush = time.monotonic()
        self._threads, self._threads_at = 1, -THREADS_EVERY_S
        self.watch = WorkerWatch(client, address=address, timeout_s=no_workers_timeout_s)

    def limit(self, max_in_flight: int | None) -> int:
        """``max_in_flight``, or twice the cluster's threads (asked every few seconds, so
        workers that join or leave are followed)."""
        if max_in_flight:
            return max_in_flight
        if time.monotonic() - self._threads_at >= THREADS_EVERY_S:
            self._threads, self._threads_at = _threads(self.client), time.monotonic()
        return 2 * self._threads

    # claims ---------------------------------------------------------------------------------

    def refill(self, limit: int) -> None:
        """Claim calls (one transaction) until ``limit`` are in flight or none is left."""
        want = limit - len(self.in_flight)
        if self.exhausted or want <= 0:
            return
        self.lease.check()
        with session_scope(self.engine) as session:
            claimed = claim_calls(session, batch_id=self.batch_id, worker=self.lease.owner,
                                  limit=want,
                                  stale_after_s=self.config.stale_claim_minutes * 60.0,
                                  retry_failed_before=self.retry)
        self.exhausted = len(claimed) < want
        for call in claimed:
            if self.root is not None and not contained(call.path, root=self.root,
                                                       allowed_roots=self.allowed_roots):
                self.done.append(_Finished(call, "rejected", "client", reason=(
                    f"{OUTSIDE}: the file now resolves elsewhere")))
                continue
            future = self.client.submit(
                score_on_worker, str(call.path), model=self.model_future,
                channel_roles=call.channel_roles, config=self.config, pure=False,
                key=f"score-call-{call.id}-{os.urandom(4).hex()}")
            self.in_flight[future] = call

    # results --------------------------------------------------------------------------------

    def collect(self) -> None:
        """Wait (up to POLL_S) for finished tasks; raise :class:`ClusterError` on a fault."""
        from distributed import wait
        from distributed.client import FuturesCancelledError

        if not self.in_flight:
            return
        try:
            with self.client.as_current():  # wait() uses the current client
                finished = wait(list(self.in_flight), timeout=POLL_S,
                                return_when="FIRST_COMPLETED").done
        except TimeoutError:
            finished = set()
        except FuturesCancelledError:  # each cancelled one is a cluster fault, raised below
            finished = {future for future in self.in_flight if future.done()}
        if self.client.status in ("closing", "closed"):
            raise ClusterError(f"lost the connection to the Dask scheduler at {self.address}")
        if not finished:
            n = len(self.in_flight)
            self.watch.check(waiting=f"{n} call{'s' if n != 1 else ''}")
        for future in finished:
            call = self.in_flight.pop(future)
            if future.status != "finished":
                raise _task_fault(call, future, self.address)
            outcome: CallOutcome = future.result()
            future.release()
            if outcome.status == "unreadable":
                mine = _unreadable_here(call.path)
                if mine is None:
                    raise ClusterError(
                        f"Dask worker {outcome.worker} cannot read {call.path} "
                        f"({outcome.reason}), which this machine can: mount the audio at the "
                        "same path on every worker")
                # nobody can read it: the call's own fault, as in the local path
                self.done.append(_Finished(call, "failed", outcome.worker, reason=mine))
            else:
                self.done.append(_Finished(call, outcome.status, outcome.worker,
                                       result=outcome.result, reason=outcome.reason))

    def flush(self, *, force: bool = False) -> None:
        """Write the finished calls in one transaction (when enough or old enough)."""
        if not self.done:
            return
        due = (force or len(self.done) >= WRITE_BATCH or not self.in_flight
               or time.monotonic() - self.last_flush >= FLUSH_S)
        if not due:
            return
        owner, mv_id = self.lease.owner, self.model.model_version_id
        written: list[tuple[_Finished, bool]] = []
        with session_scope(self.engine) as session:
            for item in self.done:
                reason = item.reason
                if item.status != "scored" and self.base is not None:
                    reason = relative_reason(reason, root=self.base)
                ok = write_outcome(session, call_id=item.call.id, worker=owner,
                                   model_version_id=mv_id, status=item.status, reason=reason,
                                   result=item.result)
                written.append((item, ok))
        self.done.clear()
        self.last_flush = time.monotonic()
        for item, ok in written:
            stats = self.stats.setdefault(item.worker, WorkerStats(item.worker))
            stats.record(item.call.id, item.status, written=ok,
                         audio_seconds=0.0 if item.result is None else item.result.duration_s)
            if self.on_call is not None:
                self.on_call(item.call.id, "scored" if item.status == "scored" else "failed")

    def drive(self, max_in_flight: int | None) -> list[WorkerStats]:
        """Claim, submit, collect and write until no call is left; one stats per Dask worker.

        On a :class:`ClusterError` what finished before the fault is written (it is good),
        then the rest is abandoned; on anything else the rest is abandoned at once.
        """
        try:
            while True:
                self.refill(self.limit(max_in_flight))
                if not self.in_flight and not self.done:
                    break
                self.collect()
                self.flush()
            self.flush(force=True)
        except ClusterError:
            try:
                self.flush(force=True)
            finally:
                self.abandon()
            raise
        except BaseException:
            self.abandon()
            raise
        return sorted(self.stats.values(), key=lambda s: s.worker)

    def abandon(self) -> None:
        """After a fault: cancel the tasks in flight and put this run's claims back to pending
        (one statement), so the next run takes them at once and no call carries an error."""
        if self.in_flight:
            try:
                self.client.cancel(list(self.in_flight))
            except Exception as exc:  # noqa: BLE001 - the scheduler may be gone; they die with it
                log.debug("cancelling %d tasks failed: %s", len(self.in_flight), exc)
            self.in_flight.clear()
        try:
            with session_scope(self.engine) as session:
                released = release_claims(session, owner=self.lease.owner)
        except Exception as exc:  # noqa: BLE001 - a lost database: the lease ends, claims free
            log.debug("releasing the claims of %s failed: %s", self.lease.owner, exc)
        else:
            if released:
                log.info("released %d claimed calls of batch %d", released, self.batch_id)


@contextmanager
def _connected(address: str, *, timeout_s: float, progress: bool,
               on_call: Callable[[int, str], None] | None,
               ) -> Iterator[tuple[Client, Callable[[int, str], None] | None]]:
    """A client of the scheduler (:func:`connect`) and the per-call callback, which with
    ``progress`` also moves a bar; both are closed on the way out, the client first."""
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(desc="calls", unit="call", leave=False)
    tick = on_call
    if bar is not None:
        def tick(call_id: int, status: str) -> None:
            bar.update(1)
            if on_call is not None:
                on_call(call_id, status)

    client = connect(address, timeout_s=timeout_s)
    try:
        yield client, tick
    finally:
        client.close()
        if bar is not None:
            bar.close()


def _model_on_worker(model: LoadedModel) -> LoadedModel:
    """The model as a task result (what the calls' tasks depend on)."""
    return model


def _submit_model(client: Client, model: LoadedModel, *, address: str) -> Future:
    """The model as a task the scheduler can run again if the workers holding it die, copied
    to every worker; any failure to submit it is a :class:`ClusterError`."""
    try:
        future = client.submit(_model_on_worker, model, pure=False,
                               key=f"ser-model-{model.model_version_id}-{os.urandom(4).hex()}")
        # a copy on every worker from the start, so the scheduler spreads the calls at once
        # instead of first placing them where the model happens to be
        client.replicate([future])
        return future
    except Exception as exc:  # noqa: BLE001 - a cluster fault, whatever its type
        raise ClusterError(f"could not send the model to the Dask workers at "
                           f"{address}: {type(exc).__name__}: {first_line(exc)}") from None


def score_claims_on_cluster(
    engine: Engine,
    *,
    batch_id: int,
    model: LoadedModel,
    address: str,
    config: ScoringConfig = DEFAULT_CONFIG,
    path: Path | None = None,
    allowed_roots: Sequence[Path] = (),
    retry_before: dt.datetime | None = None,
    progress: bool = False,
    max_in_flight: int | None = None,
    connect_timeout_s: float = CONNECT_TIMEOUT_S,
    no_workers_timeout_s: float = NO_WORKERS_TIMEOUT_S,
    on_call: Callable[[int, str], None] | None = None,
) -> list[WorkerStats]:
    """Score the claimable calls of ``batch_id`` on the Dask cluster at ``address``.

    The same contract as the local pool in ``etl.runs.batch`` (``run_worker``): claims under a
    lease, per-call status semantics, ``path`` as the batch folder for containment and
    relative reasons, ``retry_before`` for ``config.retry_failed``. Results are written from
    this process, several calls per transaction.

    Parameters
    ----------
    model
        The loaded model version; sent to every worker once.
    address
        The scheduler, e.g. ``tcp://scheduler:8786``.
    max_in_flight
        Calls submitted and not yet written; default twice the cluster's threads (read
        each round, so workers that join are used).
    connect_timeout_s
        How long to wait for the scheduler and for its first worker.
    no_workers_timeout_s
        How long calls in flight wait for a worker once the cluster has none left.
    on_call
        Called with ``(call_id, "scored" | "failed")`` after each call is written.

    Returns
    -------
    list of WorkerStats
        One per Dask worker that scored calls (``worker`` is its address).

    Raises
    ------
    ClusterError
        Scheduler unreachable, a worker that cannot read the audio, Dask gave up on a call,
        the scheduler lost, or no worker left for ``no_workers_timeout_s``: no per-call error is stored and the unfinished claims are
        released.
    """
    root = None if path is None else Path(path)
    with (_connected(address, timeout_s=connect_timeout_s, progress=progress,
                     on_call=on_call) as (client, tick),
          Lease(engine, name=f"dask:{worker_name()}") as lease):
        run = _ClusterRun(engine, client, lease=lease, batch_id=batch_id, model=model,
                   model_future=_submit_model(client, model, address=address), config=config,
                   root=root, allowed_roots=allowed_roots, address=address,
                   retry_before=retry_before, on_call=tick,
                   no_workers_timeout_s=no_workers_timeout_s)
        return run.drive(max_in_flight)


__all__ = ["score_claims_on_cluster"]
