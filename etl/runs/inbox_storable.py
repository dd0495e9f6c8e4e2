"""Text the database can store: the calls table's column limits, and names that are not UTF-8.

A file or folder name that is not UTF-8 (Python keeps its undecodable bytes as lone
surrogates), a NUL byte or a call key too long for its unique index cannot reach PostgreSQL:
:func:`_storable_entry` turns such an entry into a rejected one whose reason shows the name with
``\\xNN`` escapes (:func:`_printable`) and says which name to change.
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

from etl.runs.inbox_confinement import relative_reason
from etl.runs.inbox_entry import CallEntry

# What the calls table holds: calls.agent_id and calls.queue are varchar(64); call_key sits in
# a unique b-tree index (rows up to ~2.7 kB), so keys are kept well under that.
MAX_LABEL_CHARS = 64
MAX_CALL_ID_CHARS = 256
MAX_KEY_BYTES = 1024
MAX_FILE_CHARS = 4096


def _storable(text: str) -> bool:
    """Whether PostgreSQL can store ``text``: valid UTF-8 (no undecodable bytes of a file name,
    which Python keeps as lone surrogates) and no NUL."""
    if "\x00" in text:
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _printable(text: str) -> str:
    """``text`` as the database can store and a reason can show it: bytes of a file name that
    are not UTF-8 as ``\\xNN``, NUL as ``\\x00``."""
    if _storable(text):
        return text
    try:
        raw = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        raw = text.encode("utf-8", "backslashreplace")
    return raw.decode("utf-8", "backslashreplace").replace("\x00", "\\x00")


def _storable_entry(entry: CallEntry, *, root: Path) -> CallEntry:
    """``entry`` if every text of it can be stored; else a rejected entry that says which name
    to change (a file or folder name that is not UTF-8, a call key too long for its index)."""
    key, path = entry.call_key, str(entry.path)
    if _storable(key) and _storable(path) and len(key.encode()) <= MAX_KEY_BYTES:
        if entry.error is None or _storable(entry.error):
            return entry
        return dataclasses.replace(entry, error=_printable(entry.error))
    shown_key, shown_path = _printable(key), relative_reason(_printable(path), root=root)
    if not (_storable(key) and _storable(path)):
        name = shown_key if not _storable(key) else shown_path
        reason = (f"the name '{name}' is not UTF-8; rename the file (or its folder) in UTF-8 "
                  "and it is scored on the next run")
    else:
        reason = (f"the call key is {len(key.encode())} bytes long (at most {MAX_KEY_BYTES}); "
                  "use a shorter call_id or file path")
    if len(shown_key.encode()) > MAX_KEY_BYTES:
        digest = hashlib.sha256(shown_key.encode()).hexdigest()[:12]
        shown_key = shown_key[:200] + f"...#{digest}"
    if entry.error:
        reason = f"{_printable(entry.error)}; also {reason}"
    return CallEntry(shown_key, Path(shown_path[:MAX_FILE_CHARS]), line=entry.line, error=reason)
