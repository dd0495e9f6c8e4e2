"""Batch discovery: which recordings a batch folder holds, and which rows of it are refused.

A batch folder is a drop zone: whoever can write a ``calls.csv`` there could point the scorer at
any file the service account can read. So every recording a batch reads must resolve (after
following symbolic links) inside the batch folder, or under one of the extra roots the operator
lists (``SER_BATCH_ROOTS``, passed in as ``allowed_roots``); anything else becomes a *rejected*
entry, a call that is registered as failed with the reason ``outside the batch folder`` and is
never opened.

No input stops the night: a bad ``started_at`` (not ISO 8601, or outside 1970-2099), a bad or
repeated channel role, a ``call_id`` used twice, an ``agent_id``/``queue`` longer than the
database holds, a NUL byte, an unreadable row (a field over 128 KiB, a line over 1 MiB) or a
name that is not UTF-8 rejects that row or file (with its line number or path) and the rest is
scored. A ``calls.csv`` that cannot be used at all (unreadable, no ``call_id``/``file`` header)
is one rejected entry and the recordings of its folder wait until it is fixed.
``strict=True`` restores all-or-nothing: the first rejected entry raises :class:`ValueError`.

Spreadsheet exports are read as they come: a UTF-8 byte-order mark, UTF-16 ("Unicode text"),
lines in Windows-1252/Latin-1 (each line that is not UTF-8), ``;`` or tab separators when the
header shows them, CR, LF or CRLF line ends.

Files still being copied are left for the next run: with ``settle_s`` > 0 a recording (or a
``calls.csv``) modified less than ``settle_s`` ago is watched once, for at most ``settle_s``; if
its size or modification time changed (or it stayed too young) its entry is *deferred*: not
registered, found again by the next run. Names starting with ``.`` are not read, so a delivery
can be written under a hidden name and renamed into place.

Reasons never contain host paths: files are named relative to the batch folder, because the
reason reaches analysts through ``analytics.calls.error``.

The walk through a batch folder and the entries it makes are here (:func:`discover_calls`);
their parts live beside it: the entry (``etl.runs.inbox_entry``), reading a ``calls.csv``
(``etl.runs.inbox_manifest``) and the fields of its rows (``etl.runs.inbox_fields``),
containment (``etl.runs.inbox_confinement``), text the database can store
(``etl.runs.inbox_storable``) and settling (``etl.runs.inbox_settle``).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from etl.audio.decode import is_audio_path
from etl.runs.inbox_confinement import OUTSIDE, contained, is_inside
from etl.runs.inbox_entry import CallEntry
from etl.runs.inbox_fields import ROLES, _row_entry
from etl.runs.inbox_manifest import ManifestError, _manifest_rows, _Row
from etl.runs.inbox_settle import _changing, _checked_file
from etl.runs.inbox_storable import (
    MAX_CALL_ID_CHARS,
    MAX_FILE_CHARS,
    _printable,
    _storable,
    _storable_entry,
)

if TYPE_CHECKING:
    from etl.scoring.config import ScoringConfig

log = logging.getLogger(__name__)

MANIFEST = "calls.csv"


@dataclass(slots=True)
class _Found:
    """The entries found so far in one batch folder, the files calls.csv rows account for, and
    the folders (key prefixes) whose recordings wait for their calls.csv."""

    strict: bool
    root: Path
    entries: dict[str, CallEntry] = field(default_factory=dict)
    listed: set[Path] = field(default_factory=set)
    held: dict[str, str] = field(default_factory=dict)  # key prefix -> why its calls wait
    folders: dict[Path, Path] = field(default_factory=dict)  # folder -> resolved, see _resolved
    # key prefix -> why its unlisted files wait: a row there could not say which file it names
    unsure: dict[str, str] = field(default_factory=dict)

    def add(self, entry: CallEntry) -> None:
        entry = _storable_entry(entry, root=self.root)
        if entry.error and self.strict:
            where = f" (line {entry.line})" if entry.line else ""
            raise ValueError(f"{entry.call_key}{where}: {entry.error}")
        self.entries[entry.call_key] = entry


def discover_calls(
    root: Path,
    *,
    config: ScoringConfig | None = None,
    strict: bool = False,
    allowed_roots: Sequence[Path] = (),
    settle_s: float = 0.0,
) -> list[CallEntry]:
    """Every recording under ``root`` (a folder, searched recursively, or a single file).

    In each folder a ``calls.csv`` (columns ``call_id, file`` and optionally ``agent_id, queue,
    started_at, customer_channel | agent_channel | channel_roles``) describes its recordings;
    audio files it does not list are still scored, keyed by their path relative to ``root``
    (one entry per file: a second name reached through a symbolic link adds nothing). Names
    starting with ``.`` are not read.

    Rejected entries (``entry.error`` set, registered as failed calls): a row or file that
    resolves outside ``root`` and ``allowed_roots``; a bad row (see the module's docstring);
    a ``call_id`` already used (on an earlier line, or as the name of an unlisted file); a file
    name that is not UTF-8; a ``calls.csv`` that is a link to elsewhere or has no usable header
    (its folder's recordings are then deferred). A row whose file is missing fails at once
    (``entry.failure``) without a worker opening anything.

    Parameters
    ----------
    root
        The batch folder (or one recording).
    config
        A ``ScoringConfig`` (its ``stereo_roles``), or None for the defaults.
    strict
        Raise on the first rejected entry instead (all-or-nothing).
    allowed_roots
        Resolved folders outside ``root`` that recordings may also live in.
    settle_s
        Seconds a file must have stopped changing to be scored (:data:`DEFAULT_SETTLE_S` for
        the nightly inbox); younger files are watched once, for at most this long, and those
        still changing come back ``deferred``. 0 takes every file as it is.

    Raises
    ------
    ValueError
        ``root`` does not exist or its name is not UTF-8; with ``strict``, any rejected entry
        (the message names the file and line).
    """
    stereo_roles = config.stereo_roles if config is not None else ROLES
    root = Path(root).expanduser().resolve()
    if not _storable(str(root)):
        raise ValueError(f"batch path {_printable(str(root))!r} is not UTF-8; rename it")
    if root.is_file():
        changing = _changing([root], settle_s=settle_s)
        found = _Found(strict, root.parent)
        found.add(CallEntry(root.stem, root))
        return _finish(found, changing=changing, watched={root}, settle_s=settle_s)
    if not root.is_dir():
        raise ValueError(f"batch path {root} does not exist")
    manifests, audio = _walk(root)
    changing = _changing([*manifests, *audio], settle_s=settle_s)
    watched = {p.resolve() for p in (*manifests, *audio)} if settle_s > 0 else set()
    found = _Found(strict, root)
    for manifest in manifests:
        _read_manifest(manifest, root=root, allowed_roots=allowed_roots,
                       stereo_roles=stereo_roles, found=found, changing=changing)
    _add_unlisted(audio, root=root, roots=(root, *allowed_roots), found=found)
    return _finish(found, changing=changing, watched=watched, settle_s=settle_s)


def _walk(root: Path) -> tuple[list[Path], list[Path]]:
    """``(calls.csv files, audio files)`` under ``root``, sorted. Folders reached through a
    symbolic link are not entered (as ``Path.rglob``); names starting with ``.`` are skipped,
    so a delivery can be written under a hidden name and renamed into place."""
    manifests: list[Path] = []
    audio: list[Path] = []

    def unreadable(exc: OSError) -> None:
        log.warning("cannot list %s (%s): its recordings are not scored",
                    _printable(str(exc.filename)), exc.strerror)

    for folder, dirs, files in os.walk(root, onerror=unreadable):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        base = Path(folder)
        for name in files:
            if name.startswith("."):
                continue
            path = base / name
            if name == MANIFEST:
                manifests.append(path)
            elif is_audio_path(path) and path.is_file():
                audio.append(path)
    return sorted(manifests), sorted(audio)


def _read_manifest(manifest: Path, *, root: Path, allowed_roots: Sequence[Path],
                   stereo_roles: tuple[str, str], found: _Found,
                   changing: Mapping[Path, str]) -> None:
    """Add an entry for every row of one ``calls.csv`` (or one rejected entry for the file
    itself when it is a link to elsewhere or unusable) and mark the files its rows account
    for. A ``calls.csv`` still changing or unusable holds its folder's recordings back."""
    folder = manifest.parent
    prefix = "" if folder == root else folder.relative_to(root).as_posix() + "/"
    rel_manifest = manifest.relative_to(root).as_posix()
    if not contained(manifest, root=root, allowed_roots=allowed_roots):
        found.add(CallEntry(prefix + MANIFEST, Path(rel_manifest),
                            error=f"{OUTSIDE}: {rel_manifest} is a symbolic link to somewhere "
                            "else; it was not read"))
        return
    if not _storable(rel_manifest):  # its rows' keys could not be stored; files fail by name
        found.add(CallEntry(_printable(prefix + MANIFEST), Path(_printable(rel_manifest)), error=(
            f"the name '{_printable(rel_manifest)}' is not UTF-8; rename its folder in UTF-8 "
            "and it is read on the next run")))
        return
    if manifest in changing:
        found.held[prefix] = f"{rel_manifest} is still changing ({changing[manifest]})"
        return
    roots = (root, *allowed_roots)
    first_line: dict[str, int] = {}
    try:
        with manifest.open("rb") as binary:
            for row in _manifest_rows(binary, name=rel_manifest):
                _add_row(row, folder=folder, prefix=prefix, rel_manifest=rel_manifest,
                         roots=roots, stereo_roles=stereo_roles, first_line=first_line,
                         found=found)
    except (ManifestError, OSError) as exc:
        why = str(exc) if isinstance(exc, ManifestError) else (
            f"cannot be read ({exc.strerror or type(exc).__name__})")
        found.add(CallEntry(prefix + MANIFEST, Path(rel_manifest), error=(
            f"{rel_manifest} {why}; the recordings of its folder wait until it is fixed")))
        found.held[prefix] = f"{rel_manifest} cannot be used"


def _add_row(row: _Row, *, folder: Path, prefix: str, rel_manifest: str,
             roots: Sequence[Path], stereo_roles: tuple[str, str],
             first_line: dict[str, int], found: _Found) -> None:
    """The entry of one calls.csv record (rejected with its line number when it is bad)."""
    number = row.line
    where = f"{rel_manifest} line {number}"
    by_line = f"{prefix}line-{number}"
    if row.problem is not None:
        found.add(CallEntry(by_line, Path(rel_manifest), line=number, error=(
            f"{where}: {row.problem}; fix it (until then the folder's recordings that calls.csv "
            "does not list are not scored)")))
        found.unsure.setdefault(prefix, f"{where} cannot be read and may list it")
        return
    call_id = (row.cells.get("call_id") or "").strip()
    raw = (row.cells.get("file") or "").strip()
    with_nul = [column for column, value in row.cells.items() if "\x00" in value]
    problem = None
    if with_nul:
        problem = f"{', '.join(_printable(c) for c in with_nul)} contains a NUL byte; remove it"
    elif len(call_id) > MAX_CALL_ID_CHARS:
        problem = f"call_id is {len(call_id)} characters long; at most {MAX_CALL_ID_CHARS}"
    elif len(raw) > MAX_FILE_CHARS:
        problem = f"file is {len(raw)} characters long; at most {MAX_FILE_CHARS}"
    if problem is not None:
        usable = bool(call_id) and "call_id" not in with_nul and len(call_id) <= MAX_CALL_ID_CHARS
        key = prefix + call_id if usable else by_line
        if key in first_line or key in found.entries:
            key = f"{key}#line{number}"
        elif usable:
            first_line[key] = number
        found.add(CallEntry(key, Path(rel_manifest), line=number, error=f"{where}: {problem}"))
        file_usable = bool(raw) and "file" not in with_nul and len(raw) <= MAX_FILE_CHARS
        named = _resolved(folder, raw, cache=found.folders) if file_usable else None
        if named is not None and is_inside(named, roots):
            found.listed.add(named)  # this row accounts for the file: not scored by name
        elif named is None:
            found.unsure.setdefault(prefix, f"{where} was not read and may list it")
        return
    key = prefix + (call_id or f"line-{number}")
    if not call_id or not raw:
        found.add(CallEntry(key, Path(raw), line=number, error=(
            f"{where}: empty {'call_id' if not call_id else 'file'}")))
        return
    path = _resolved(folder, raw, cache=found.folders)
    if key in first_line:
        if path is not None and is_inside(path, roots):
            found.listed.add(path)  # this row accounts for the file: not scored by name
        found.add(CallEntry(f"{key}#line{number}", Path(raw), line=number, error=(
            f"{where}: duplicate call_id {call_id!r} (first on line "
            f"{first_line[key]}); this row was not scored")))
        return
    first_line[key] = number
    if path is None or not is_inside(path, roots):
        found.add(CallEntry(key, Path(raw), line=number,
                            error=f"{OUTSIDE}: {where} ({_why_outside(raw)})"))
        return
    found.listed.add(path)
    found.add(_row_entry(row.cells, key=key, path=path, line=number, where=where,
                         stereo_roles=stereo_roles))


def _why_outside(raw: str) -> str:
    if os.path.isabs(raw) or raw.startswith("~"):
        return "the file column is an absolute path"
    if ".." in Path(raw).parts:
        return "the file column leaves the folder with '..'"
    return "the file is a symbolic link to somewhere else"


def _resolved(folder: Path, raw: str, *, cache: dict[Path, Path]) -> Path | None:
    """Where a row's ``file`` leads, every symbolic link followed; None for a link loop.

    Folders are resolved once (``cache``) and then only the file itself is checked for a link:
    a calls.csv of 100,000 rows in a few folders costs one ``lstat`` a row, not one per path
    component.
    """
    candidate = Path(raw).expanduser() if raw.startswith("~") else folder / raw
    try:
        if candidate.name in ("", ".", ".."):
            return candidate.resolve()
        parent = cache.get(candidate.parent)
        if parent is None:
            parent = cache[candidate.parent] = candidate.parent.resolve()
        path = parent / candidate.name
        return path.resolve() if path.is_symlink() else path
    except (OSError, RuntimeError):
        return None


def _add_unlisted(audio: Sequence[Path], *, root: Path, roots: Sequence[Path],
                  found: _Found) -> None:
    """Add the audio files under ``root`` that no calls.csv row accounts for, keyed by their
    path relative to ``root`` without the suffix. A recording reached under two names (a
    symbolic link inside the folder) is added once, under its own name when that is inside."""
    resolved = {path: path.resolve() for path in audio}
    seen = set(found.listed)
    # the file itself first, then links to it
    for path in sorted(audio, key=lambda p: (resolved[p] != p, p)):
        real = resolved[path]
        if real in seen:
            continue
        seen.add(real)
        rel = path.relative_to(root)
        key = rel.with_suffix("").as_posix()
        if not _storable(rel.as_posix()):
            found.add(CallEntry(_printable(key), Path(_printable(rel.as_posix())), error=(
                f"the file name '{_printable(rel.as_posix())}' is not UTF-8; rename it in UTF-8 "
                "and it is scored on the next run")))
            continue
        unsure = next((why for prefix, why in found.unsure.items() if key.startswith(prefix)),
                      None)
        if unsure is not None:
            found.add(CallEntry(key, real, deferred=f"not in calls.csv, but {unsure}"))
            continue
        if not is_inside(real, roots):
            found.add(CallEntry(key, rel, error=f"{OUTSIDE}: {rel.as_posix()} is a symbolic "
                                "link to somewhere else"))
            continue
        if key in found.entries:
            line = found.entries[key].line
            found.add(CallEntry(f"{key}#file", real, error=(
                f"duplicate call_id {key!r}: {rel.as_posix()} is not in calls.csv and its name is "
                f"already a call_id{f' (line {line})' if line else ''}; list it under another "
                "call_id")))
            continue
        found.add(CallEntry(key, real))


def _finish(found: _Found, *, changing: Mapping[Path, str], watched: set[Path],
            settle_s: float) -> list[CallEntry]:
    """The entries in key order: held-back folders and files still changing deferred, files
    that are not there failed at once. ``watched``: the resolved files :func:`_changing` judged
    (others, e.g. under an allowed root, settle when their modification time is old enough)."""
    waiting = {path.resolve(): why for path, why in changing.items()}
    now = time.time()
    base = str(found.root.resolve()) + os.sep
    entries: list[CallEntry] = []
    for entry in sorted(found.entries.values(), key=lambda e: e.call_key):
        held = next((why for prefix, why in found.held.items()
                     if entry.call_key.startswith(prefix)
                     and entry.call_key != prefix + MANIFEST), None)
        if held is not None:
            entry = dataclasses.replace(entry, deferred=held)
        elif not entry.rejected and not entry.deferred:
            entry = _checked_file(entry, base=base, waiting=waiting, now=now,
                                  settle_s=0.0 if entry.path in watched else settle_s)
        entries.append(entry)
    deferred = [e for e in entries if e.deferred]
    if deferred:
        log.warning("%d recording(s) not registered, left for the next run: %s", len(deferred),
                    "; ".join(f"{e.call_key}: {e.deferred}" for e in deferred[:5])
                    + (" ..." if len(deferred) > 5 else ""))
    return entries
