"""The local feature-extraction worker pool, kept free of Prefect imports.

`etl.runs.features.start_run` starts it before ``ser features`` imports Prefect, so the
workers' imports (numpy, scipy.fft, soundfile, soxr) and their first chunks run while the command
imports Prefect and starts the flow run. Workers import neither librosa nor the database layer
(etl.audio.filters has the filter banks). The console script starts the forkserver even earlier
(`start_forkserver`, from ``ser.entry``), before the CLI is imported.
"""

from __future__ import annotations

import multiprocessing as mp
from concurrent.futures import ProcessPoolExecutor
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from etl.features.specs import ClipResult, FeatureSpec

# Worker processes fork from a server that has already imported the extraction stack, so a
# worker starts in milliseconds instead of re-importing numpy/scipy (about a second).
_WORKER_PRELOAD = ["etl.features.extraction", "etl.audio.dsp", "etl.audio.decode", "etl.audio.filters", "scipy.fft",
                   "scipy.ndimage", "scipy.sparse", "soxr", "soundfile", "miniaudio",
                   "threadpoolctl"]


def _context() -> mp.context.ForkServerContext:
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(_WORKER_PRELOAD)
    return ctx  # type: ignore[return-value]


def start_forkserver() -> None:
    """Start the forkserver now (it imports `_WORKER_PRELOAD` in the background); a later
    `local_pool` forks its workers from it. It exits with this process."""
    from multiprocessing import forkserver

    _context()
    forkserver.ensure_running()


def local_pool(workers: int) -> ProcessPoolExecutor:
    return ProcessPoolExecutor(max_workers=workers, mp_context=_context())


def extract_chunk(items: list[tuple[int, str]], spec: FeatureSpec) -> list[ClipResult]:
    """`etl.features.extraction.extract_files`, imported where it runs: the process that submits chunks
    and writes results never imports the extraction stack (scipy, decoders: ~0.3 s of CPU)."""
    from etl.features.extraction import extract_files

    return extract_files(items, spec)
