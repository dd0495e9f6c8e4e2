"""Features flow: compute one feature set for every current clip that lacks it.

The run itself (`etl.runs.features`: pending clips streamed in keyset pages to worker
processes, results bulk-written one transaction per chunk) has no Prefect in it, so
``ser features --no-prefect`` runs it directly. On a Dask cluster (``dask_address``) each chunk
is a Prefect task run by ``DaskTaskRunner``.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, task
from prefect.cache_policies import NONE

from config import get_settings
from db.engine import cached_engine
from etl.features.specs import ClipResult, feature_spec
from etl.runs.features import FeatureRunConfig, Submit, run_feature_sets
from etl.runs.pool import extract_chunk as extract_files_chunk
from flows.database import database_url


@task(name="extract-features-chunk", retries=1, cache_policy=NONE)
def extract_chunk(items: list[tuple[int, str]], set_name: str, channel: str) -> list[ClipResult]:
    """Decode and extract one chunk of files (runs in a worker process)."""
    return extract_files_chunk(items, feature_spec(set_name, channel))


@flow(name="features", log_prints=False)
def features_flow(
    config: FeatureRunConfig | None = None,
    dask_address: str | None = None,
    augment: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Compute the feature set of ``config`` for every current clip that lacks it.

    Parameters
    ----------
    config : the feature set, clips, workers and chunk size (default: rich/telephony for
        every corpus on ``SER_WORKERS`` local worker processes)
    dask_address : ``tcp://host:port`` of a Dask scheduler: chunks run as Prefect tasks on
        the cluster via ``prefect_dask.DaskTaskRunner``. Default: local worker processes.
    augment : also compute the phone-augmented companion set (``rich+phone``: copies of each
        clip through a simulated phone line, what `ser train` trains telephony models on)

    Returns
    -------
    `FeaturesReport` as a dict; with ``augment``, the companion's under ``"augmented"``.

    Notes
    -----
    Locally the chunks run on a forkserver process pool rather than as one Prefect task each:
    per-task orchestration (API round trips, spawning workers that re-import Prefect) would
    cost more than extracting a chunk. On Dask each chunk is a Prefect task.
    """
    config = config or FeatureRunConfig(channel="telephony", workers=get_settings().workers)
    engine = cached_engine(database_url())
    if not dask_address:
        return run_feature_sets(engine, config, augment=augment, progress=progress)
    from prefect_dask import DaskTaskRunner

    with DaskTaskRunner(address=dask_address) as runner:
        def submit_for(run: FeatureRunConfig) -> Submit:
            def submit(chunk: list[tuple[int, str]]) -> Any:
                return runner.submit(extract_chunk, parameters={
                    "items": chunk, "set_name": run.set_name, "channel": run.channel})
            return submit

        return run_feature_sets(engine, config, augment=augment, progress=progress,
                                submit_for=submit_for)
