"""The Dask cluster as this process sees it: reaching it, noticing it has no workers, and the
one-line error a cluster fault stops a run with.

Nightly scoring (``etl.runs.cluster_scoring``) and feature runs (``etl.runs.features``) both
submit work to a plain ``distributed.Client``; this module holds what they share.
:func:`connect` gives a client of a scheduler with at least one worker, :class:`WorkerWatch`
stops a run whose tasks wait on a cluster left without workers, and :func:`task_fault` turns a
Dask task that raised (rather than returning an outcome) into a :class:`ClusterError`. A cluster
fault is never a call's fault: the run stops and stores no per-call error.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from etl.runs.outcomes import first_line

if TYPE_CHECKING:
    from distributed import Client

CONNECT_TIMEOUT_S = 10.0
# A nanny restarts a killed worker within seconds; no worker for this long means none is coming.
NO_WORKERS_TIMEOUT_S = 60.0


class ClusterError(RuntimeError):
    """The cluster, not a recording, stopped the run (one line naming the cause).

    No per-call error was stored and the run's unfinished claims were released: rerun (on a
    working cluster, or locally) to score what is left.
    """


def connect(address: str, *, timeout_s: float = CONNECT_TIMEOUT_S) -> Client:
    """A client of the scheduler at ``address`` with at least one worker, or :class:`ClusterError`."""
    from distributed import Client
    from distributed.comm import parse_address
    from distributed.comm.registry import get_backend

    try:  # up front: a Client given an unknown scheme hangs on its way out, and one given
        # no address starts a cluster of its own
        if not address.strip():
            raise ValueError("empty")
        get_backend(parse_address(address)[0])
    except ValueError as exc:
        raise ClusterError(f"not a Dask scheduler address: {address!r} ({first_line(exc)}); "
                           "e.g. tcp://scheduler:8786") from None
    try:
        client = Client(address, timeout=timeout_s, set_as_default=False)
    except (OSError, TimeoutError, ValueError, TypeError) as exc:
        raise ClusterError(f"cannot reach the Dask scheduler at {address}: "
                           f"{first_line(exc)}") from None
    try:
        client.wait_for_workers(1, timeout=timeout_s)
    except (OSError, TimeoutError) as exc:
        client.close()
        raise ClusterError(f"the Dask scheduler at {address} has no workers (waited "
                           f"{timeout_s:g} s; start some with `dask worker {address}`)") from exc
    return client


class WorkerWatch:
    """Stops a run whose tasks wait on a cluster that has had no worker for ``timeout_s``.

    The scheduler keeps tasks without a worker waiting for one forever; this process asks
    for the workers (:meth:`check`) whenever nothing finished in a round.
    """

    def __init__(self, client: Client, *, address: str, timeout_s: float = NO_WORKERS_TIMEOUT_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.client, self.address, self.timeout_s, self.clock = client, address, timeout_s, clock
        self.since: float | None = None  # when the cluster was first seen without workers

    def check(self, *, waiting: str) -> None:
        """Raise :class:`ClusterError` if no worker has been there for ``timeout_s``;
        ``waiting`` names what waits (``3 calls``)."""
        if self.client.nthreads():
            self.since = None
            return
        now = self.clock()
        if self.since is None:
            self.since = now
        elif now - self.since >= self.timeout_s:
            raise ClusterError(f"the Dask cluster at {self.address} has had no workers for "
                               f"{self.timeout_s:g} s while {waiting} waited: start workers "
                               f"(`dask worker {self.address}`) and run again")


def task_fault(exc: BaseException | None, *, what: str, doing: str, stage: str, address: str,
               cancelled: bool = False) -> ClusterError:
    """The run-stopping error of a Dask task that raised (rather than returning an outcome).

    ``what`` names the work (``call K``, ``clips a..b``), ``doing`` what workers died doing
    (``scoring it``), ``stage`` the work a task failed outside of (``recording``).
    """
    from distributed import KilledWorker

    if cancelled:
        return ClusterError(f"Dask cancelled the task of {what} (lost the scheduler at "
                            f"{address}?)")
    if isinstance(exc, KilledWorker):
        last = getattr(exc.last_worker, "address", exc.last_worker)
        return ClusterError(f"Dask gave up on {what} (KilledWorker): "
                            f"{exc.allowed_failures + 1} workers died while {doing}, the last "
                            f"{last}; see the worker logs (a crash or out of memory?)")
    if isinstance(exc, ModuleNotFoundError):
        return ClusterError(f"a Dask worker lacks the module {exc.name!r} ({what}): install "
                            "ser-analytics on every worker")
    return ClusterError(f"the Dask task of {what} failed outside the {stage}: "
                        f"{type(exc).__name__}: {first_line(exc) if exc else 'no detail'}")


__all__ = ["CONNECT_TIMEOUT_S", "NO_WORKERS_TIMEOUT_S", "ClusterError", "WorkerWatch", "connect",
           "task_fault"]
