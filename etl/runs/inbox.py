"""Batch discovery: which recordings a batch folder holds, and which rows of it are refused.

A batch folder is a drop zone: whoever can write a ``calls.csv`` there could point the scorer at
any file the service account can read. So every recording a batch reads must resolve (after
following symbolic links) inside the batch folder, or under one of the extra roots the operator
lists (``SER_BATCH_ROOTS``, passed in as ``allowed_roots``); anything else becomes a *rejected*
entry, a call that is registered as failed with the reason ``outside the batch folder`` and is
never opened.

One bad ``calls.csv`` row does not stop the night: a bad ``started_at``, a bad channel role or a
``call_id`` used twice rejects that row (with its line number) and the rest is scored.
``strict=True`` restores all-or-nothing: the first rejected row raises :class:`ValueError`.

Reasons never contain host paths: files are named relative to the batch folder, because the
reason reaches analysts through ``analytics.calls.error``.
"""

from __future__ import annotations

import csv
import datetime as dt
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from etl.audio.decode import is_audio_path

if TYPE_CHECKING:
    from etl.scoring.recording import ScoringConfig

MANIFEST = "calls.csv"
OUTSIDE = "outside the batch folder"
_CHANNEL_WORDS = {"left": 0, "l": 0, "0": 0, "ch0": 0, "right": 1, "r": 1, "1": 1, "ch1": 1}
_KNOWN_COLUMNS = {"call_id", "file", "agent_id", "queue", "started_at", "customer_channel",
                  "agent_channel", "channel_roles"}
ROLES = ("agent", "customer")


@dataclass(frozen=True, slots=True)
class CallEntry:
    """One recording to score, as found in a batch folder.

    ``error`` set means the entry is rejected: it is registered as a failed call with that
    reason and its ``path`` (then the text the manifest gave, relative or not) is never opened.
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

    @property
    def rejected(self) -> bool:
        return self.error is not None


def parse_channel_roles(row: Mapping[str, str | None], *,
                        stereo_roles: tuple[str, str] = ("agent", "customer")) -> dict[str, str]:
    """Channel roles from a calls.csv row.

    ``customer_channel``/``agent_channel`` (left, right, 0, 1) or ``channel_roles``
    ("agent,customer": role per channel in order). Empty = the defaults (``stereo_roles``).

    Raises
    ------
    ValueError
        A channel word that is not left/right/0/1, or a role that is not agent/customer.
    """
    explicit = (row.get("channel_roles") or "").strip()
    if explicit:
        roles = [r.strip().lower() for r in explicit.replace(";", ",").split(",") if r.strip()]
        unknown = sorted({r for r in roles if r not in ROLES})
        if unknown:
            raise ValueError(f"channel_roles {explicit!r}: {', '.join(unknown)} is not "
                             "agent/customer")
        return {str(i): role for i, role in enumerate(roles)}
    for role in ("customer", "agent"):
        value = (row.get(f"{role}_channel") or "").strip().lower()
        if value:
            if value not in _CHANNEL_WORDS:
                raise ValueError(f"{role}_channel {value!r} is not left/right/0/1")
            channel = _CHANNEL_WORDS[value]
            other = "agent" if role == "customer" else "customer"
            return {str(channel): role, str(1 - channel): other}
    return {}


def _parse_time(value: str | None) -> dt.datetime | None:
    """ISO 8601 date-time; naive times are UTC.

    Raises
    ------
    ValueError
        Not an ISO 8601 date-time.
    """
    if not value or not value.strip():
        return None
    try:
        parsed = dt.datetime.fromisoformat(value.strip())
    except ValueError:
        raise ValueError(f"started_at {value.strip()!r} is not an ISO date-time "
                         "(e.g. 2024-03-02T10:00:00)") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def parse_roots(value: str | Sequence[str | Path] | None) -> tuple[Path, ...]:
    """Extra roots a batch may read from: a sequence, or one string split on ``os.pathsep``."""
    if not value:
        return ()
    parts: Iterable[str | Path] = value.split(os.pathsep) if isinstance(value, str) else value
    return tuple(Path(p).expanduser().resolve() for p in parts if str(p).strip())


def is_inside(path: Path, roots: Sequence[Path]) -> bool:
    """Whether ``path`` (already resolved) is one of ``roots`` or below one."""
    return any(path == root or path.is_relative_to(root) for root in roots)


def contained(path: Path, *, root: Path, allowed_roots: Sequence[Path] = ()) -> bool:
    """Whether ``path``, with every symbolic link followed, stays under ``root`` (or an allowed
    root). Checked at discovery and again right before a worker opens the file."""
    try:
        resolved = Path(path).resolve()
    except (OSError, RuntimeError):  # a symlink loop
        return False
    return is_inside(resolved, (Path(root).resolve(), *allowed_roots))


def _why_outside(raw: str) -> str:
    if os.path.isabs(raw) or raw.startswith("~"):
        return "the file column is an absolute path"
    if ".." in Path(raw).parts:
        return "the file column leaves the folder with '..'"
    return "the file is a symbolic link to somewhere else"


@dataclass(slots=True)
class _Found:
    """The entries found so far in one batch folder, and the files calls.csv rows account for."""

    strict: bool
    entries: dict[str, CallEntry] = field(default_factory=dict)
    listed: set[Path] = field(default_factory=set)

    def add(self, entry: CallEntry) -> None:
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
) -> list[CallEntry]:
    """Every recording under ``root`` (a folder, searched recursively, or a single file).

    In each folder a ``calls.csv`` (columns ``call_id, file`` and optionally ``agent_id, queue,
    started_at, customer_channel | agent_channel | channel_roles``) describes its recordings;
    audio files it does not list are still scored, keyed by their path relative to ``root``.
    A row whose file is missing is kept: it fails with that reason when scored.

    Rejected entries (``entry.error`` set, registered as failed calls): a row or file that
    resolves outside ``root`` and ``allowed_roots``; a bad ``started_at`` or channel role; a
    ``call_id`` already used (on an earlier line, or as the name of an unlisted file); a
    ``calls.csv`` that is itself a link to elsewhere.

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

    Raises
    ------
    ValueError
        ``root`` does not exist; a calls.csv lacks the required columns; with ``strict``, any
        rejected entry (the message names the file and line).
    """
    stereo_roles = config.stereo_roles if config is not None else ROLES
    root = Path(root).expanduser().resolve()
    if root.is_file():
        return [CallEntry(root.stem, root)]
    if not root.is_dir():
        raise ValueError(f"batch path {root} does not exist")
    found = _Found(strict)
    for manifest in sorted(root.rglob(MANIFEST)):
        _read_manifest(manifest, root=root, allowed_roots=allowed_roots,
                       stereo_roles=stereo_roles, found=found)
    _add_unlisted(root, roots=(root, *allowed_roots), found=found)
    return sorted(found.entries.values(), key=lambda e: e.call_key)


def _read_manifest(manifest: Path, *, root: Path, allowed_roots: Sequence[Path],
                   stereo_roles: tuple[str, str], found: _Found) -> None:
    """Add an entry for every row of one ``calls.csv`` (or one rejected entry for the file
    itself when it is a link to elsewhere) and mark the files its rows account for."""
    folder = manifest.parent
    prefix = "" if folder == root else folder.relative_to(root).as_posix() + "/"
    rel_manifest = manifest.relative_to(root).as_posix()
    if not contained(manifest, root=root, allowed_roots=allowed_roots):
        found.add(CallEntry(prefix + MANIFEST, Path(rel_manifest),
                            error=f"{OUTSIDE}: {rel_manifest} is a symbolic link to somewhere "
                            "else; it was not read"))
        return
    roots = (root, *allowed_roots)
    first_line: dict[str, int] = {}
    with manifest.open(newline="") as handle:
        reader = csv.DictReader(handle)
        missing = {"call_id", "file"} - set(reader.fieldnames or [])
        if missing:
            raise ValueError(f"{rel_manifest} lacks column(s) {sorted(missing)}; "
                             "it needs call_id,file[,agent_id,queue,started_at,"
                             "customer_channel]")
        for number, row in enumerate(reader, start=2):
            call_id = (row.get("call_id") or "").strip()
            raw = (row.get("file") or "").strip()
            key = prefix + (call_id or f"line-{number}")
            where = f"{rel_manifest} line {number}"
            if not call_id or not raw:
                found.add(CallEntry(key, Path(raw), line=number, error=(
                    f"{where}: empty {'call_id' if not call_id else 'file'}")))
                continue
            candidate = Path(raw).expanduser() if raw.startswith("~") else folder / raw
            try:
                path = candidate.resolve()
            except (OSError, RuntimeError):
                path = None
            if key in first_line:
                if path is not None and is_inside(path, roots):
                    found.listed.add(path)  # this row accounts for the file: not scored by name
                found.add(CallEntry(f"{key}#line{number}", Path(raw), line=number, error=(
                    f"{where}: duplicate call_id {call_id!r} (first on line "
                    f"{first_line[key]}); this row was not scored")))
                continue
            first_line[key] = number
            if path is None or not is_inside(path, roots):
                found.add(CallEntry(key, Path(raw), line=number,
                                    error=f"{OUTSIDE}: {where} ({_why_outside(raw)})"))
                continue
            found.listed.add(path)
            found.add(_row_entry(row, key=key, path=path, line=number, where=where,
                                 stereo_roles=stereo_roles))


def _row_entry(row: Mapping[str, str | None], *, key: str, path: Path, line: int, where: str,
               stereo_roles: tuple[str, str]) -> CallEntry:
    """The entry for one calls.csv row whose file is inside the batch; rejected (with
    ``where`` in the reason) when its ``started_at`` or channel roles do not parse."""
    try:
        return CallEntry(
            call_key=key,
            path=path,
            agent_id=(row.get("agent_id") or "").strip() or None,
            queue=(row.get("queue") or "").strip() or None,
            started_at=_parse_time(row.get("started_at")),
            channel_roles=parse_channel_roles(row, stereo_roles=stereo_roles),
            extra={k: v for k, v in row.items()
                   if k and k not in _KNOWN_COLUMNS and v not in (None, "")},
            line=line,
        )
    except ValueError as exc:
        return CallEntry(key, path, line=line, error=f"{where}: {exc}")


def _add_unlisted(root: Path, *, roots: Sequence[Path], found: _Found) -> None:
    """Add the audio files under ``root`` that no calls.csv row accounts for, keyed by their
    path relative to ``root`` without the suffix."""
    for path in sorted(p for p in root.rglob("*") if p.is_file() and is_audio_path(p)):
        resolved = path.resolve()
        if resolved in found.listed:
            continue
        rel = path.relative_to(root)
        key = rel.with_suffix("").as_posix()
        if not is_inside(resolved, roots):
            found.add(CallEntry(key, rel, error=f"{OUTSIDE}: {rel.as_posix()} is a symbolic "
                                "link to somewhere else"))
            continue
        if key in found.entries:
            line = found.entries[key].line
            found.add(CallEntry(f"{key}#file", resolved, error=(
                f"duplicate call_id {key!r}: {rel.as_posix()} is not in calls.csv and its name is "
                f"already a call_id{f' (line {line})' if line else ''}; list it under another "
                "call_id")))
            continue
        found.add(CallEntry(key, resolved))


def relative_reason(reason: str, *, root: Path) -> str:
    """``reason`` with the batch folder's host path removed (files named relative to it)."""
    base = str(Path(root).resolve())
    return reason.replace(base + os.sep, "").replace(base, ".")
