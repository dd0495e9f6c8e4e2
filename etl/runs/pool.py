"""The local feature-extraction worker pool, kept free of Prefect imports.

Workers import neither librosa nor the database layer (etl.audio.filters has the filter banks):
the process that submits chunks and writes their results never imports the extraction stack.
"""

from __future__ import annotations

import multiprocessing as mp
from concurrent.futures import ProcessPoolExecutor
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from etl.features.specs import ClipResult, FeatureSpec

# Worker processes fork from a server that has already imported the extraction stack, so a
# worker starts without re-importing numpy and scipy, and a forkserver (unlike fork) is safe
# from a process with threads (the feeder, Prefect's).
_WORKER_PRELOAD = ["etl.features.extraction", "etl.audio.dsp", "etl.audio.decode",
                   "etl.audio.filters", "scipy.fft", "scipy.ndimage", "scipy.sparse", "soxr",
                   "soundfile", "miniaudio", "threadpoolctl"]


def local_pool(workers: int) -> ProcessPoolExecutor:
    """``workers`` processes forked from a forkserver that preloads the extraction stack."""
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(_WORKER_PRELOAD)
    return ProcessPoolExecutor(max_workers=workers, mp_context=ctx)


def extract_chunk(items: list[tuple[int, str]], spec: FeatureSpec) -> list[ClipResult]:
    """`etl.features.extraction.extract_files`, imported where it runs: the process that submits
    chunks and writes results never imports the extraction stack (it would compete with the
    workers for the CPU)."""
    from etl.features.extraction import extract_files

    return extract_files(items, spec)
