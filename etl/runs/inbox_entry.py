"""A recording a batch folder holds, as discovery found it (:class:`CallEntry`).

Discovery (``etl.runs.inbox``) makes one entry per recording or ``calls.csv`` row: accepted,
rejected (``error``), failed at once (``failure``) or left for the next run (``deferred``);
registration (``etl.runs.registration.register_batch``) turns each into a calls row.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True, slots=True)
class CallEntry:
    """One recording to score, as found in a batch folder.

    ``error`` set means the entry is rejected: it is registered as a failed call with that
    reason and its ``path`` (then the text the manifest gave, relative or not) is never opened.
    ``failure`` set (a file that is not there) registers it as failed without a worker
    opening anything; unlike a rejection, ``--retry-failed`` tries it again. ``deferred`` set
    means it is not registered at all: its file (or its ``calls.csv``) is still changing.
    """

    call_key: str
    path: Path
    agent_id: str | None = None
    queue: str | None = None
    started_at: dt.datetime | None = None
    channel_roles: dict[str, str] = field(default_factory=dict)  # {"0": "agent", ...}
    extra: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    line: int | None = None  # calls.csv line (1 = header) the entry came from
    failure: str | None = None
    deferred: str | None = None
    stat: tuple[int, int] | None = None  # (size, mtime_ns) when discovered: the file's version

    @property
    def rejected(self) -> bool:
        return self.error is not None
