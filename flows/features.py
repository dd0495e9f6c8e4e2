"""Features flow: compute one feature set for every current clip that lacks it.

The run itself (`etl.runs.features`: pending clips streamed in keyset pages to worker
processes, results bulk-written one transaction per chunk) has no Prefect in it, so
``ser features --no-prefect`` and the start of a run before Prefect is imported share it. On a
Dask cluster (``dask_address``) each chunk is a Prefect task run by ``DaskTaskRunner``.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, task
from prefect.cache_policies import NONE

from etl.features.specs import ClipResult, augmented_set_name, feature_spec
from etl.runs.features import DEFAULT_CHUNK_SIZE, run_features
from etl.runs.pool import extract_chunk as extract_files_chunk


@task(name="extract-features-chunk", retries=1, cache_policy=NONE)
def extract_chunk(items: list[tuple[int, str]], set_name: str, channel: str) -> list[ClipResult]:
    """Decode and extract one chunk of files (runs in a worker process)."""
    return extract_files_chunk(items, feature_spec(set_name, channel))


@flow(name="features", log_prints=False)
def features_flow(
    set_name: str = "rich",
    channel: str = "telephony",
    corpus: str | None = None,
    dask_address: str | None = None,
    workers: int | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    retry_errors: bool = False,
    progress: bool = True,
    augment: bool = False,
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
    augment : also compute the phone-augmented companion set (``rich+phone``: copies of each
        clip through a simulated phone line, what `ser train` trains telephony models on)

    Returns
    -------
    `FeaturesReport` as a dict; with ``augment``, the companion's under ``"augmented"``.

    Notes
    -----
    Locally the chunks run on a forkserver process pool rather than as one Prefect task each:
    per-task orchestration (API round trips, spawning workers that re-import Prefect) cost
    more than extracting a chunk. A run that ``ser features`` started before importing Prefect
    (same parameters) is taken over: its workers ran while Prefect started, and every vector
    is still written here. On Dask each chunk is a Prefect task.
    """
    from ser.settings import get_settings

    workers = workers or get_settings().workers
    kwargs: dict[str, Any] = {
        "set_name": set_name, "channel": channel, "corpus": corpus, "workers": workers,
        "chunk_size": chunk_size, "retry_errors": retry_errors, "progress": progress}
    names = [set_name] + ([augmented_set_name(set_name)] if augment else [])
    reports: list[dict[str, Any]] = []
    if not dask_address:
        reports = [run_features(**(kwargs | {"set_name": n})).as_dict() for n in names]
    else:
        from prefect_dask import DaskTaskRunner

        with DaskTaskRunner(address=dask_address) as runner:
            for n in names:
                def submit(chunk: list[tuple[int, str]], n: str = n) -> Any:
                    return runner.submit(extract_chunk, parameters={
                        "items": chunk, "set_name": n, "channel": channel})

                reports.append(run_features(**(kwargs | {"set_name": n}),
                                            submit=submit).as_dict())
    report = reports[0]
    if augment:
        report["augmented"] = reports[1]
    return report
