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
"""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import hashlib
import io
import logging
import os
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from etl.audio.decode import is_audio_path

if TYPE_CHECKING:
    from etl.scoring.recording import ScoringConfig

log = logging.getLogger(__name__)

MANIFEST = "calls.csv"
OUTSIDE = "outside the batch folder"
ROLES = ("agent", "customer")
_CHANNEL_WORDS = {"left": 0, "l": 0, "0": 0, "ch0": 0, "right": 1, "r": 1, "1": 1, "ch1": 1}
_KNOWN_COLUMNS = frozenset({"call_id", "file", "agent_id", "queue", "started_at",
                            "customer_channel", "agent_channel", "channel_roles"})
_HEADER_HELP = ("call_id,file[,agent_id,queue,started_at,customer_channel|agent_channel|"
                "channel_roles]")

# A recording settles when it has not changed for this long: the nightly inbox's default
# (flows pass it); ``ser score`` of a folder the operator names waits for nothing (0).
DEFAULT_SETTLE_S = 30.0
# started_at outside [EARLIEST_START, LATEST_START) is a typo or a placeholder (9999-12-31),
# never a call; such a row fails instead of reaching the date columns and the reports.
EARLIEST_START = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
LATEST_START = dt.datetime(2100, 1, 1, tzinfo=dt.UTC)
# What the calls table holds: calls.agent_id and calls.queue are varchar(64); call_key sits in
# a unique b-tree index (rows up to ~2.7 kB), so keys are kept well under that.
MAX_LABEL_CHARS = 64
MAX_CALL_ID_CHARS = 256
MAX_KEY_BYTES = 1024
MAX_FILE_CHARS = 4096
# A calls.csv line longer than this is one unreadable row (and is never held in memory whole);
# a single field is capped by the csv module's own limit (128 KiB).
MAX_LINE_CHARS = 1 << 20
_BOM_UTF8 = b"\xef\xbb\xbf"
_BOMS_UTF16 = (b"\xff\xfe", b"\xfe\xff")


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


class ManifestError(ValueError):
    """A ``calls.csv`` that cannot be used at all (no header with ``call_id`` and ``file``)."""


# --------------------------------------------------------------------------------------------
# Fields of a row
# --------------------------------------------------------------------------------------------


def parse_channel_roles(row: Mapping[str, str | None], *,
                        stereo_roles: tuple[str, str] = ("agent", "customer")) -> dict[str, str]:
    """Channel roles from a calls.csv row.

    ``customer_channel``/``agent_channel`` (left, right, 0, 1) or ``channel_roles``
    ("agent,customer": role per channel in order). Empty = the defaults (``stereo_roles``).

    Raises
    ------
    ValueError
        A channel word that is not left/right/0/1, a role that is not agent/customer, or a
        role named for two channels (each role is one channel of the call).
    """
    explicit = (row.get("channel_roles") or "").strip()
    if explicit:
        roles = [r.strip().lower() for r in explicit.replace(";", ",").split(",") if r.strip()]
        unknown = sorted({r for r in roles if r not in ROLES})
        if unknown:
            raise ValueError(f"channel_roles {explicit!r}: {', '.join(unknown)} is not "
                             "agent/customer")
        repeated = sorted({r for r in roles if roles.count(r) > 1})
        if repeated:
            raise ValueError(f"channel_roles {explicit!r} names {' and '.join(repeated)} for "
                             "two channels; give each channel its own role, e.g. "
                             "'agent,customer'")
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
        Not an ISO 8601 date-time, or not between 1970 and 2099 (UTC).
    """
    if not value or not value.strip():
        return None
    text = value.strip()
    try:
        parsed = dt.datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"started_at {text!r} is not an ISO date-time "
                         "(e.g. 2024-03-02T10:00:00)") from None
    parsed = parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)
    try:
        in_window = EARLIEST_START <= parsed < LATEST_START
    except OverflowError:  # 9999-12-31T23:59:59-12:00 is past year 9999 in UTC
        in_window = False
    if not in_window:
        raise ValueError(f"started_at {text!r} is outside {EARLIEST_START.year}-"
                         f"{LATEST_START.year - 1} (UTC); give the call's real start or leave "
                         "it empty")
    return parsed


def _label(row: Mapping[str, str | None], column: str) -> str | None:
    """``agent_id`` or ``queue``, stripped; ValueError when longer than the column holds."""
    value = (row.get(column) or "").strip()
    if len(value) > MAX_LABEL_CHARS:
        raise ValueError(f"{column} is {len(value)} characters long; at most "
                         f"{MAX_LABEL_CHARS} fit")
    return value or None


# --------------------------------------------------------------------------------------------
# Containment
# --------------------------------------------------------------------------------------------


def parse_roots(value: str | Sequence[str | Path] | None) -> tuple[Path, ...]:
    """Extra roots a batch may read from: a sequence, or one string split on ``os.pathsep``."""
    if not value:
        return ()
    parts: Iterable[str | Path] = value.split(os.pathsep) if isinstance(value, str) else value
    return tuple(Path(p).expanduser().resolve() for p in parts if str(p).strip())


def is_inside(path: Path, roots: Sequence[Path]) -> bool:
    """Whether ``path`` (already resolved) is one of ``roots`` or below one.

    Compared as text (both sides are resolved, absolute paths): a row of a large calls.csv
    costs no path parsing.
    """
    text = str(path)
    return any(text == str(root) or text.startswith(str(root).rstrip(os.sep) + os.sep)
               for root in roots)


def contained(path: Path, *, root: Path, allowed_roots: Sequence[Path] = ()) -> bool:
    """Whether ``path``, with every symbolic link followed, stays under ``root`` (or an allowed
    root). Checked at discovery and again right before a worker opens the file."""
    try:
        resolved = Path(path).resolve()
    except (OSError, RuntimeError):  # a symlink loop
        return False
    return is_inside(resolved, (Path(root).resolve(), *allowed_roots))


class InboxError(ValueError):
    """A nightly run was asked to score a folder that is not the configured inbox."""


def confined_inbox(requested: str | Path | None, *, configured: Path) -> Path:
    """The folder a nightly run scores: ``configured`` (created if missing), or an existing
    folder inside it that ``requested`` names.

    A flow run's parameters come from whoever can reach the Prefect API, so they may not name
    another folder to read or create: the inbox is the service's own setting (``SER_INBOX``).
    """
    inbox = Path(configured).expanduser().resolve()
    if requested is None or str(requested) == "":
        inbox.mkdir(parents=True, exist_ok=True)
        return inbox
    folder = Path(requested).expanduser()
    if not folder.is_absolute():
        raise InboxError(f"inbox {str(requested)!r} is not an absolute path; the nightly run "
                         f"scores {inbox} (SER_INBOX)")
    resolved = folder.resolve()
    if resolved == inbox:
        inbox.mkdir(parents=True, exist_ok=True)
        return inbox
    if not is_inside(resolved, (inbox,)) or not resolved.is_dir():
        raise InboxError(f"inbox {str(requested)!r} is not the configured inbox {inbox} or a "
                         "folder inside it; set SER_INBOX (or ser serve --inbox) for the "
                         "service instead of a run parameter")
    return resolved


def _why_outside(raw: str) -> str:
    if os.path.isabs(raw) or raw.startswith("~"):
        return "the file column is an absolute path"
    if ".." in Path(raw).parts:
        return "the file column leaves the folder with '..'"
    return "the file is a symbolic link to somewhere else"


# --------------------------------------------------------------------------------------------
# Text the database can store
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# Reading a calls.csv
# --------------------------------------------------------------------------------------------


class _LineTooLongError(Exception):
    """A calls.csv line over :data:`MAX_LINE_CHARS` (skipped without holding it)."""


class _Lines:
    """The text lines of a calls.csv, for the csv module.

    Each line is decoded on its own: UTF-8 (a leading byte-order mark dropped), else
    Windows-1252, else Latin-1, so a spreadsheet's export is read whatever its code page and a
    file mixing both is read line by line; a UTF-16 file (with its BOM) as UTF-16. CR, LF and
    CRLF all end a line. ``number`` counts the lines handed out so far.
    """

    def __init__(self, binary: IO[bytes]) -> None:
        head = binary.read(4)
        binary.seek(0)
        self.utf16 = head.startswith(_BOMS_UTF16)
        # Latin-1 maps every byte to one character: the line's bytes come back unchanged
        self._text = io.TextIOWrapper(binary, encoding="utf-16" if self.utf16 else "latin-1",
                                      newline="")
        self.number = 0
        self.legacy: tuple[int, str] | None = None  # first line not in UTF-8, its code page

    def __iter__(self) -> Iterator[str]:
        return self

    def __next__(self) -> str:
        line = self._text.readline(MAX_LINE_CHARS + 1)
        if not line:
            raise StopIteration
        self.number += 1
        if len(line) > MAX_LINE_CHARS and not line.endswith(("\n", "\r")):
            while (rest := self._text.readline(MAX_LINE_CHARS)) and not rest.endswith(
                    ("\n", "\r")):
                pass
            raise _LineTooLongError(f"the line is longer than {MAX_LINE_CHARS // 1024} KiB")
        if self.utf16:
            return line
        raw = line.encode("latin-1")
        if self.number == 1 and raw.startswith(_BOM_UTF8):
            raw = raw[len(_BOM_UTF8):]
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            pass
        for codec in ("cp1252", "latin-1"):
            try:
                text = raw.decode(codec)
            except UnicodeDecodeError:
                continue
            if self.legacy is None:
                self.legacy = (self.number, "Windows-1252" if codec == "cp1252" else "Latin-1")
            return text
        raise AssertionError("latin-1 decodes every byte")  # pragma: no cover


def _column(name: str) -> str:
    """A header cell as a column name: known columns in any case and spacing."""
    name = name.replace("\x00", "").strip().lstrip("\ufeff").strip()
    lowered = name.lower()
    return lowered if lowered in _KNOWN_COLUMNS else name


def _header(line: str) -> tuple[list[str], str]:
    """Column names and separator of a calls.csv header line: ``,``, else ``;`` or a tab when
    splitting on it (and only it) gives the ``call_id`` and ``file`` columns."""
    found: dict[str, list[str]] = {}
    for separator in (",", ";", "\t"):
        try:
            cells = next(csv.reader([line], delimiter=separator), [])
        except csv.Error:
            continue
        columns = [_column(c) for c in cells]
        if {"call_id", "file"} <= set(columns):
            found[separator] = columns
    if "," in found:
        return found[","], ","
    if len(found) == 1:
        separator, columns = next(iter(found.items()))
        return columns, separator
    shown = [_printable(c) for c in line.strip().split(",")][:8]
    if len(found) > 1:
        raise ManifestError(f"the header {shown} splits into call_id and file both on ';' and "
                            "on tabs; save it with one separator (CSV UTF-8, commas)")
    cells = {_column(c) for c in next(csv.reader([line]), [])}
    missing = sorted({"call_id", "file"} - cells)
    raise ManifestError(f"lacks column(s) {missing} (its first line is {shown}); the first "
                        f"line must name the columns: {_HEADER_HELP}")


@dataclass(frozen=True, slots=True)
class _Row:
    """One record of a calls.csv: its first line and cells, or why it could not be read."""

    line: int
    cells: dict[str, str]
    problem: str | None = None


def _manifest_rows(binary: IO[bytes], *, name: str) -> Iterator[_Row]:
    """The records of a calls.csv after its header, numbered by the line each starts on
    (blank lines skipped). A record the csv module refuses (a field over 128 KiB, a line over
    1 MiB) comes back with its ``problem`` and reading goes on with the next line.

    Raises
    ------
    ManifestError
        No header naming ``call_id`` and ``file`` (an empty file included).
    """
    lines = _Lines(binary)
    try:
        first = next(lines)
    except StopIteration:
        raise ManifestError(f"is empty; the first line must name the columns: "
                            f"{_HEADER_HELP}") from None
    except _LineTooLongError as exc:
        raise ManifestError(f"line 1: {exc}; the first line must name the columns: "
                            f"{_HEADER_HELP}") from None
    columns, separator = _header(first)
    reader = csv.reader(lines, delimiter=separator)
    while True:
        start = lines.number + 1
        try:
            cells = next(reader)
        except StopIteration:
            break
        except (csv.Error, _LineTooLongError) as exc:
            yield _Row(start, {}, f"the row cannot be read ({exc})")
            continue
        if not any(c.strip() for c in cells):
            continue
        row: dict[str, str] = {}
        for column, cell in zip(columns, cells, strict=False):
            row.setdefault(column, cell)
        yield _Row(start, row)
    if lines.legacy is not None:
        line, codec = lines.legacy
        log.warning("%s is not UTF-8 (from line %d): read as %s; save it as \"CSV UTF-8\" to be "
                    "sure of its names", name, line, codec)


# --------------------------------------------------------------------------------------------
# Discovery
# --------------------------------------------------------------------------------------------


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


def _row_entry(row: Mapping[str, str | None], *, key: str, path: Path, line: int, where: str,
               stereo_roles: tuple[str, str]) -> CallEntry:
    """The entry for one calls.csv row whose file is inside the batch; rejected (with
    ``where`` in the reason) when a field does not parse or does not fit its column."""
    try:
        return CallEntry(
            call_key=key,
            path=path,
            agent_id=_label(row, "agent_id"),
            queue=_label(row, "queue"),
            started_at=_parse_time(row.get("started_at")),
            channel_roles=parse_channel_roles(row, stereo_roles=stereo_roles),
            extra={k: v for k, v in row.items()
                   if k and k not in _KNOWN_COLUMNS and v not in (None, "")},
            line=line,
        )
    except ValueError as exc:
        return CallEntry(key, path, line=line, error=f"{where}: {exc}")


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


def relative_reason(reason: str, *, root: Path) -> str:
    """``reason`` with the batch folder's host path removed (files named relative to it)."""
    base = str(Path(root).resolve())
    return reason.replace(base + os.sep, "").replace(base, ".")
