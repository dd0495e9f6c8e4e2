"""A Dask run whose cluster has no worker left gives up after a bounded wait
(``etl.runs.cluster.WorkerWatch``), without starting a cluster: the client is a stand-in that
reports the workers a scheduler would, the clock a counter."""

from __future__ import annotations

import pytest

from etl.runs.cluster import ClusterError, WorkerWatch

ADDRESS = "tcp://scheduler:8786"


class _Scheduler:
    """What ``Client.nthreads()`` answers: threads per worker address."""

    def __init__(self) -> None:
        self.workers: dict[str, int] = {"tcp://w1:1234": 1}

    def nthreads(self) -> dict[str, int]:
        return dict(self.workers)


def test_no_worker_for_the_timeout_stops_the_run_with_one_line() -> None:
    scheduler, now = _Scheduler(), [0.0]
    watch = WorkerWatch(scheduler, address=ADDRESS, timeout_s=30.0,  # type: ignore[arg-type]
                        clock=lambda: now[0])
    watch.check(waiting="2 calls")  # a worker: nothing to say
    scheduler.workers.clear()  # the last worker died, nothing restarts it
    for now[0] in (100.0, 110.0, 129.0):
        watch.check(waiting="2 calls")  # within the wait: a restart may still come
    now[0] = 130.0
    with pytest.raises(ClusterError) as error:
        watch.check(waiting="2 calls")
    message = str(error.value)
    assert "\n" not in message and ADDRESS in message and "no workers for 30 s" in message
    assert "2 calls" in message and f"dask worker {ADDRESS}" in message


def test_a_worker_back_within_the_wait_starts_the_wait_anew() -> None:
    scheduler, now = _Scheduler(), [0.0]
    watch = WorkerWatch(scheduler, address=ADDRESS, timeout_s=30.0,  # type: ignore[arg-type]
                        clock=lambda: now[0])
    scheduler.workers.clear()
    watch.check(waiting="1 call")
    now[0] = 20.0
    scheduler.workers["tcp://w2:1234"] = 1  # a nanny restarted it
    watch.check(waiting="1 call")
    scheduler.workers.clear()  # and it died again
    for now[0] in (40.0, 69.0):
        watch.check(waiting="1 call")  # 29 s without a worker since it was last seen gone
    now[0] = 70.0
    with pytest.raises(ClusterError):
        watch.check(waiting="1 call")
