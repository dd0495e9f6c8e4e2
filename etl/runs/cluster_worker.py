"""The worker side of nightly scoring on a Dask cluster: what one call's task runs on a worker.

A worker has the audio and the package, never the database. :func:`score_on_worker` scores one
recording there and returns every failure of the recording itself as a :class:`CallOutcome`
(the client, ``etl.runs.cluster_scoring``, writes it); anything it raises is a cluster fault.
Its first call gives the worker process back glibc's usual mmap threshold, which the trim
threshold Dask's nanny sets had frozen (:func:`etl.runs.pool.adaptive_mmap_threshold`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from etl.audio.decode import AudioError
from etl.runs.outcomes import first_line, is_host_fault
from etl.runs.pool import adaptive_mmap_threshold, open_error, this_worker
from etl.scoring.audio_passes import CallError
from etl.scoring.config import ScoringConfig
from etl.scoring.recording import CallResult, score_recording

if TYPE_CHECKING:
    from etl.training.loading import LoadedModel

log = logging.getLogger(__name__)


@dataclass(slots=True)
class CallOutcome:
    """What a worker made of one call: a result, a per-call failure, or an unreadable file.

    ``unreadable`` is not a verdict on the call: the client decides (a file this process can
    read but a worker cannot is a cluster fault; a file nobody can read fails the call).
    """

    status: Literal["scored", "failed", "unreadable"]
    worker: str
    result: CallResult | None = None
    reason: str = ""


def score_on_worker(path: str, *, model: LoadedModel, channel_roles: Mapping[str, str],
                    config: ScoringConfig) -> CallOutcome:
    """Score one call on a worker; every failure of the recording itself is returned, not raised.

    Anything this function raises is therefore a cluster fault (the client stops the run).
    """
    adaptive_mmap_threshold()
    worker = this_worker()
    try:
        result = score_recording(Path(path), model=model, channel_roles=channel_roles,
                                 config=config)
    except (AudioError, CallError) as exc:
        # a file this worker cannot open may be fine elsewhere: the client decides
        cannot = open_error(Path(path))
        if cannot is not None:
            return CallOutcome("unreadable", worker, reason=cannot)
        return CallOutcome("failed", worker, reason=first_line(exc))
    except Exception as exc:  # one bad recording must not stop the batch (as run_worker)
        if is_host_fault(exc):  # this worker's disk is full: a cluster fault, not the call's
            raise
        log.exception("unexpected error scoring %s", path)
        return CallOutcome("failed", worker,
                           reason=f"unexpected {type(exc).__name__}: {first_line(exc)}")
    return CallOutcome("scored", worker, result=result)


__all__ = ["CallOutcome", "score_on_worker"]
