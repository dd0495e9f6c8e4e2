"""Where feature chunks are extracted, kept free of Prefect imports: the local worker pool, and
the function a Dask worker runs (`extract_chunk_on_worker`).

Workers import neither librosa nor the database layer (etl.audio.filters has the filter banks):
the process that submits chunks and writes their results never imports the extraction stack.
"""

from __future__ import annotations

import ctypes
import multiprocessing as mp
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
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


def open_error(path: str | Path) -> str | None:
    """Why ``path`` cannot be opened and read here (``strerror``), or None if it can."""
    try:
        with Path(path).open("rb") as handle:
            handle.read(1)
    except OSError as exc:
        return exc.strerror or str(exc).splitlines()[0]
    return None


@dataclass(slots=True)
class ChunkOutcome:
    """What a Dask worker made of one chunk.

    ``results`` has one `ClipResult` per clip, exactly what the local pool returns.
    ``unreadable`` maps the clips whose file this worker could not open to its reason: their
    ``decode:`` results are no verdict yet (the client stores them only if it cannot read the
    file either; otherwise the worker, not the clip, is at fault).
    """

    worker: str
    results: list[ClipResult]
    unreadable: dict[int, str]


# glibc serves a block above its mmap threshold with a fresh mapping (zero-filled page by page
# on first touch, unmapped on free) and normally raises that threshold as large blocks are
# freed; a fixed MALLOC_TRIM_THRESHOLD_, which Dask's nanny sets for every worker, turns the
# raising off, so every audio block and feature array of every call pays its page faults again.
_M_MMAP_THRESHOLD = -3  # mallopt's parameter (malloc.h)
_MMAP_THRESHOLD = 32 * 1024 * 1024  # the ceiling of glibc's own adaptive threshold (64-bit)
_allocator_set = False


def adaptive_mmap_threshold() -> None:
    """Once per Dask worker process: the mmap threshold glibc would have reached by itself.

    Only where the environment fixed the trim threshold and left the mmap threshold alone
    (an explicit ``MALLOC_MMAP_THRESHOLD_`` is the operator's choice); freed memory is still
    returned to the system as the trim threshold asks.
    """
    global _allocator_set
    if _allocator_set:
        return
    _allocator_set = True
    if (not sys.platform.startswith("linux") or "MALLOC_TRIM_THRESHOLD_" not in os.environ
            or "MALLOC_MMAP_THRESHOLD_" in os.environ):
        return
    try:
        ctypes.CDLL(None).mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD)
    except (OSError, AttributeError):  # no mallopt (not glibc): nothing to give back
        pass


def this_worker() -> str:
    """The Dask worker's address this runs on (or this process, called directly)."""
    try:
        from distributed import get_worker

        return str(get_worker().address)
    except ValueError:  # not on a Dask worker (called directly)
        return f"pid {os.getpid()}"


def extract_chunk_on_worker(items: list[tuple[int, str]], spec: FeatureSpec) -> ChunkOutcome:
    """`extract_chunk` on a Dask worker, noting the files this worker cannot open.

    Every failure of a clip itself is in the results; anything this raises is a fault of the
    worker (the client stops the run).
    """
    adaptive_mmap_threshold()
    results = extract_chunk(items, spec)
    paths = dict(items)
    # only a failed clip can be an unreadable file (one that may be fine elsewhere)
    unreadable = {r.clip_id: why for r in results
                  if r.reason is not None and (why := open_error(paths[r.clip_id])) is not None}
    return ChunkOutcome(this_worker(), results, unreadable)
