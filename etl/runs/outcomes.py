"""What became of a claimed call, as the runners count and report it.

:data:`CallStatus` is a call's outcome (written by ``etl.runs.results``), :class:`WorkerStats`
what one worker did in a run, :func:`first_line` the one line of an exception stored as a call's
error or shown to the operator, and :func:`is_host_fault` the test that tells an error of this
host (a full disk) from an error of the recording. The local pool (``etl.runs.batch``) and the
Dask run (``etl.runs.cluster_scoring``) share them.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass, field
from typing import Literal

# What became of a claimed call (written by etl.runs.results): ``rejected`` is failed for good
# (its file is outside the batch folder); progress callbacks report it as ``failed``.
CallStatus = Literal["scored", "failed", "rejected"]


@dataclass(slots=True)
class WorkerStats:
    """What one worker (a local process, or a Dask worker seen from the client) did in a run."""

    worker: str
    scored: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)
    lost: list[int] = field(default_factory=list)  # claims taken over before we could write
    audio_seconds: float = 0.0

    def record(self, call_id: int, status: CallStatus, *, written: bool,
               audio_seconds: float = 0.0) -> None:
        """Count one call this worker finished (``written`` False: its claim was taken over)."""
        if not written:
            self.lost.append(call_id)
        elif status == "scored":
            self.scored.append(call_id)
            self.audio_seconds += audio_seconds
        else:
            self.failed.append(call_id)


def first_line(exc: BaseException) -> str:
    """An exception as the one line stored as a call's error or shown to the operator."""
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def is_host_fault(exc: BaseException) -> bool:
    """Whether ``exc`` is this host's fault, not the recording's: a full disk (ENOSPC) while
    scoring would fail every call after it, so it ends the run (the call in hand stays claimed
    by the run's lease, free again for the rerun) instead of failing them one by one."""
    return isinstance(exc, OSError) and exc.errno == errno.ENOSPC
