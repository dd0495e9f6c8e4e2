"""The local feature-extraction worker pool, kept free of Prefect imports.

``ser features`` starts it first thing, so the workers' imports (numpy, scipy.fft, soundfile,
soxr) run in their own processes while the command itself imports Prefect and connects to its
server. Workers import neither librosa nor the database layer (etl.filters has the filter banks).
"""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor

# Worker processes fork from a server that has already imported the extraction stack, so a
# worker starts in milliseconds instead of re-importing numpy/scipy (about a second).
_WORKER_PRELOAD = ["etl.features", "etl.dsp", "etl.audio", "etl.filters", "scipy.fft",
                   "scipy.ndimage", "scipy.sparse", "soxr", "soundfile", "threadpoolctl"]


def local_pool(workers: int) -> ProcessPoolExecutor:
    import multiprocessing as mp

    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(_WORKER_PRELOAD)
    return ProcessPoolExecutor(max_workers=workers, mp_context=ctx)
