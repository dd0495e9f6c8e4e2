"""Nightly scoring on Dask: real-time factor with 1 and 2 worker processes, and the per-call
overhead against the local pool (the `"dask"` part of bench/nightly.py's JSON).

The batch is bench/nightly.py's (its ``train`` and ``generate``: a RAVDESS model trained on
actors 01-16, stereo 8 kHz calls from the held-out actors 17-20) in a scratch embedded
PostgreSQL. The same folder is then scored as separate batches (one batch date each):

1. the local pool (``etl.runs.batch.score_batch``, ``--local-workers`` processes);
2. on a ``LocalCluster`` of 1, then 2 worker processes (one thread each), or on the cluster at
   ``--dask-address``, through the same ``score_batch`` with ``dask_address`` (what
   ``ser score --dask-address`` runs).

A cluster stands for an existing engine: its workers are started and have imported the package
before the clock starts (a night's run does not pay for starting the cluster). Every timed run
includes discovery, registration, loading the model and writing the results, like
``score_batch``'s ``wall_seconds``. ``scaling`` is the 2-worker real-time factor over twice the
1-worker one (target >= 0.8); ``overhead_ms_per_call`` is (cluster wall - local wall) / calls at
the same number of worker processes, and its CPU twin (workers + client + scheduler against
the local pool's processes) is what the cluster costs whatever else the machine is doing; the
load average at the start says how far to trust the wall-clock figures. Segment counts per
call are compared with the local run.

Run through ``python bench/nightly.py --dask`` (or ``--dask-address tcp://host:8786``): its
batch, its scratch database, these figures under ``"dask"``.
"""

from __future__ import annotations

import datetime as dt
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.memory import TreeMonitor

LOCAL_DAY = dt.date(2024, 2, 1)
# imported by every worker before the clock starts (what a long-running worker has loaded)
WORKER_IMPORTS = ("etl.runs.cluster_scoring", "etl.features.extraction", "etl.training.loading")


def segments_per_call(engine: Any, batch_id: int) -> dict[str, int]:
    from sqlalchemy import text

    with engine.connect() as conn:
        rows = conn.execute(text(
            "SELECT c.call_key, count(s.call_id) FROM calls c LEFT JOIN call_segments s "
            "ON s.call_id = c.id WHERE c.batch_id = :b GROUP BY c.call_key"),
            {"b": batch_id}).all()
    return {key: int(n) for key, n in rows}


def score_on_cluster(engine: Any, folder: Path, *, day: dt.date, address: str,
                     model_ref: str = "production") -> dict[str, Any]:
    """``ser score --dask-address``'s run (``score_batch`` on the cluster); its report."""
    from etl.runs.batch import score_batch

    return score_batch(engine, folder, batch_date=day, model_ref=model_ref,
                       dask_address=address).as_dict()


def _figures(report: dict[str, Any]) -> dict[str, Any]:
    wall, audio = report["wall_seconds"], report["audio_seconds"]
    return {"wall_seconds": round(wall, 2), "audio_seconds": round(audio, 1),
            "real_time_factor": round(audio / wall, 1), "scored": report["n_scored"],
            "failed": report["n_failed"]}


def _prepare_workers(address: str) -> int:
    """Import the package on every worker; the number of worker processes."""
    import importlib

    from distributed import Client

    with Client(address, set_as_default=False) as client:
        for module in WORKER_IMPORTS:
            client.run(importlib.import_module, module)
        return len(client.nthreads())


def _workers_cpu(address: str) -> float:
    """CPU seconds the worker processes have used so far (summed)."""
    from distributed import Client

    with Client(address, set_as_default=False) as client:
        return sum(client.run(time.process_time).values())


def _own_cpu() -> float:
    return time.process_time()


def cluster_run(engine: Any, folder: Path, *, address: str, day: dt.date, model_ref: str,
                reference: dict[str, int]) -> dict[str, Any]:
    """One timed run on the cluster at ``address`` (workers prepared first); its figures."""
    n = _prepare_workers(address)
    workers_before, own_before = _workers_cpu(address), _own_cpu()
    report = score_on_cluster(engine, folder, day=day, address=address, model_ref=model_ref)
    own = _own_cpu() - own_before
    workers = _workers_cpu(address) - workers_before
    return {"workers": n, **_figures(report), "worker_cpu_seconds": round(workers, 2),
            # with a LocalCluster this includes the scheduler (it runs in this process)
            "client_cpu_seconds": round(own, 2),
            "same_segments_as_local": segments_per_call(engine, report["batch_id"]) == reference}


def cluster_runs(engine: Any, folder: Path, *, address: str | None,
                 worker_counts: Sequence[int], model_ref: str,
                 reference: dict[str, int]) -> dict[int, dict[str, Any]]:
    """The cluster runs' figures by worker count: one run on the cluster at ``address``, or
    one on a ``LocalCluster`` of each of ``worker_counts`` processes (a batch date each)."""
    from distributed import LocalCluster

    if address:
        runs = [cluster_run(engine, folder, address=address, day=LOCAL_DAY + dt.timedelta(days=1),
                            model_ref=model_ref, reference=reference)]
    else:
        runs = []
        for i, n in enumerate(worker_counts, start=1):
            with LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                              dashboard_address=":0") as cluster:
                runs.append(cluster_run(engine, folder, address=cluster.scheduler_address,
                                        day=LOCAL_DAY + dt.timedelta(days=i),
                                        model_ref=model_ref, reference=reference))
    return {run["workers"]: run for run in runs}


def scaling(runs: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """2 workers against 1 (wall and CPU), when both ran."""
    if not (1 in runs and 2 in runs):
        return {}
    return {"scaling_2_over_1": round(runs[2]["real_time_factor"]
                                      / (2 * runs[1]["real_time_factor"]), 3),
            "scaling_target": 0.8,
            # the same on two idle cores if the work splits evenly: CPU per call does not grow
            # with the workers (1.0 = none lost to the second worker)
            "worker_cpu_1_over_2": round(runs[1]["worker_cpu_seconds"]
                                         / runs[2]["worker_cpu_seconds"], 3)}


def overhead(same: dict[str, Any] | None, local: dict[str, Any], *, calls: int,
             local_cpu: float) -> dict[str, Any]:
    """Per-call cost of the cluster run with as many workers as the local pool (``same``)."""
    if same is None:
        return {}
    return {"overhead_ms_per_call_vs_local_pool": round(
                1000 * (same["wall_seconds"] - local["wall_seconds"]) / calls, 1),
            "overhead_cpu_ms_per_call_vs_local_pool": round(
                1000 * (same["worker_cpu_seconds"] + same["client_cpu_seconds"] - local_cpu)
                / calls, 1)}


def dask_figures(engine: Any, folder: Path, *, address: str | None = None,
                 worker_counts: Sequence[int] = (1, 2), local_workers: int = 2,
                 model_ref: str = "production") -> dict[str, Any]:
    """Score ``folder`` locally and on Dask (see the module docstring); the figures.

    With ``address`` the cluster there is used as it is (one run, its worker count);
    otherwise a ``LocalCluster`` of each of ``worker_counts`` processes.
    """
    from etl.runs.batch import score_batch

    # the local pool's workers are children of a forkserver: RUSAGE_CHILDREN misses them
    with TreeMonitor() as tree:
        local = score_batch(engine, folder, batch_date=LOCAL_DAY, workers=local_workers,
                            model_ref=model_ref).as_dict()
    local_cpu = tree.cpu_seconds
    reference = segments_per_call(engine, local["batch_id"])
    out: dict[str, Any] = {
        "calls": local["n_calls"], "cpus": os.cpu_count(),
        # other work on the machine skews wall-clock figures; CPU seconds are not skewed
        "load_average_1min_at_start": round(os.getloadavg()[0], 2),
        "local_pool": {"workers": local_workers, **_figures(local),
                       "cpu_seconds": round(local_cpu, 2)}}
    runs = cluster_runs(engine, folder, address=address, worker_counts=worker_counts,
                        model_ref=model_ref, reference=reference)
    out["dask"] = [runs[n] for n in sorted(runs)]
    out.update(scaling(runs))
    out.update(overhead(runs.get(local_workers), out["local_pool"], calls=out["calls"],
                        local_cpu=local_cpu))
    return out
