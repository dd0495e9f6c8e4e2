"""Features flow: compute one feature set for every current clip that lacks it.

The run itself (`etl.runs.features`: pending clips streamed in keyset pages to worker
processes or a Dask cluster, results bulk-written one transaction per chunk) has no Prefect in
it, so ``ser features --no-prefect`` runs it directly. On a Dask cluster (``dask_address``) the
whole run is this flow's one task, ``extract-features-on-dask``: the chunks go to Dask through
a plain ``distributed.Client``, not as Prefect tasks (docs/distributed.md says why).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from prefect import flow, task
from prefect.cache_policies import NONE

from config import get_settings
from db.engine import cached_engine
from etl.runs.features import FeatureRunConfig, run_feature_sets
from flows.database import database_url


# No retries: a cluster fault (ClusterError) needs a fixed cluster first, and Dask itself
# already reruns the chunks of a lost worker.
@task(name="extract-features-on-dask", cache_policy=NONE)
def extract_on_cluster(url: str, config: FeatureRunConfig, augment: bool,
                       progress: bool) -> dict[str, Any]:
    """The feature run with its chunks on the Dask cluster at ``config.dask_address``."""
    return run_feature_sets(cached_engine(url), config, augment=augment, progress=progress)


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
    dask_address : ``tcp://host:port`` of a Dask scheduler to extract on (default
        ``config.dask_address``, else ``SER_DASK_ADDRESS``; neither: local worker processes)
    augment : also compute the phone-augmented companion set (``rich+phone``: copies of each
        clip through a simulated phone line, what `ser train` trains telephony models on)

    Returns
    -------
    `FeaturesReport` as a dict; with ``augment``, the companion's under ``"augmented"``.

    Raises
    ------
    etl.runs.cluster.ClusterError
        On Dask, when the cluster rather than a clip stopped the run (the task and the flow
        run end Failed; no per-clip error is stored for it).

    Notes
    -----
    Locally the chunks run on a forkserver process pool rather than as one Prefect task each:
    per-task orchestration (API round trips, spawning workers that re-import Prefect) would
    cost more than extracting a chunk. The same holds on Dask, where Prefect tasks would also
    need every worker to reach this machine's Prefect API.
    """
    settings = get_settings()
    config = config or FeatureRunConfig(channel="telephony", workers=settings.workers)
    address = dask_address or config.dask_address or settings.dask_address
    if address:
        return extract_on_cluster(database_url(), replace(config, dask_address=address),
                                  augment, progress)
    engine = cached_engine(database_url())
    return run_feature_sets(engine, config, augment=augment, progress=progress)
