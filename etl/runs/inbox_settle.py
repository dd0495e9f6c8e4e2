"""Files still being copied are left for the next run; a settled file is known by its stat.

With ``settle_s`` > 0 a recording (or a ``calls.csv``) modified less than ``settle_s`` ago is
watched once, for at most ``settle_s`` (:func:`_changing`); if its size or modification time
changed (or it stayed too young) its entry is *deferred*: not registered, found again by the
next run. A settled file's entry carries its ``(size, mtime_ns)`` (:func:`_checked_file`): the
version of the file that is registered, so a later night can tell a changed recording from the
one it scored.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from etl.runs.inbox_entry import CallEntry

log = logging.getLogger(__name__)

# A recording settles when it has not changed for this long: the nightly inbox's default
# (flows pass it); ``ser score`` of a folder the operator names waits for nothing (0).
DEFAULT_SETTLE_S = 30.0


def _changing(paths: Sequence[Path], *, settle_s: float) -> dict[Path, str]:
    """The files of ``paths`` still changing, each with the reason it waits.

    A file last modified ``settle_s`` or more ago has settled. Younger ones (or with a
    modification time in the future: another host's clock) are looked at again once the
    youngest would be ``settle_s`` old (at most ``settle_s`` from now); a size or modification
    time that moved meanwhile, or a file gone, means the copy is still going on.
    """
    if settle_s <= 0 or not paths:
        return {}
    now = time.time()
    young: dict[Path, tuple[int, int, float]] = {}
    for path in paths:
        try:
            st = path.stat()
        except OSError:  # gone or unreadable: judged where it is opened
            continue
        age = now - st.st_mtime
        if age < settle_s:
            young[path] = (st.st_size, st.st_mtime_ns, age)
    if not young:
        return {}
    wait = settle_s - max(0.0, min(age for _size, _mtime, age in young.values()))
    log.info("%d file(s) changed less than %.0f s ago; watching them for %.1f s", len(young),
             settle_s, wait)
    time.sleep(wait)
    changing: dict[Path, str] = {}
    for path, (size, mtime_ns, _age) in young.items():
        try:
            st = path.stat()
        except OSError:
            changing[path] = "it disappeared while being watched"
            continue
        if (st.st_size, st.st_mtime_ns) != (size, mtime_ns):
            changing[path] = (f"it is still being written ({size} then {st.st_size} bytes "
                              f"over {wait:.0f} s)")
    return changing


def _checked_file(entry: CallEntry, *, base: str, waiting: Mapping[Path, str], now: float,
                  settle_s: float) -> CallEntry:
    """``entry`` deferred when its file is still changing, failed when it is not there
    (named relative to the batch folder ``base``, as :func:`relative_reason` does)."""
    if entry.path in waiting:
        return dataclasses.replace(entry, deferred=waiting[entry.path])
    try:
        st = entry.path.stat()
    except (FileNotFoundError, NotADirectoryError):
        return dataclasses.replace(
            entry, failure="file not found: " + str(entry.path).removeprefix(base))
    except OSError:  # unreadable: the worker says why
        return entry
    if settle_s > 0 and now - st.st_mtime < settle_s:  # not watched: judged by its age
        return dataclasses.replace(entry, deferred=f"it changed {now - st.st_mtime:.0f} s ago")
    return dataclasses.replace(entry, stat=(st.st_size, st.st_mtime_ns))
