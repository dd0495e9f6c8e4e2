"""Reading a ``calls.csv``: its lines, its header and its records, as whatever program wrote it.

Spreadsheet exports are read as they come: a UTF-8 byte-order mark, UTF-16 ("Unicode text"),
lines in Windows-1252/Latin-1 (each line that is not UTF-8), ``;`` or tab separators when the
header shows them, CR, LF or CRLF line ends. A record that cannot be read (a field over 128 KiB,
a line over 1 MiB) comes back with its problem and reading goes on with the next line; a file
without a header naming ``call_id`` and ``file`` is a :class:`ManifestError`. What the fields of
a record mean is ``etl.runs.inbox_fields``.
"""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO

from etl.runs.inbox_storable import _printable

log = logging.getLogger(__name__)

_KNOWN_COLUMNS = frozenset({"call_id", "file", "agent_id", "queue", "started_at",
                            "customer_channel", "agent_channel", "channel_roles"})
_HEADER_HELP = ("call_id,file[,agent_id,queue,started_at,customer_channel|agent_channel|"
                "channel_roles]")

# A calls.csv line longer than this is one unreadable row (and is never held in memory whole);
# a single field is capped by the csv module's own limit (128 KiB).
MAX_LINE_CHARS = 1 << 20
_BOM_UTF8 = b"\xef\xbb\xbf"
_BOMS_UTF16 = (b"\xff\xfe", b"\xfe\xff")


class ManifestError(ValueError):
    """A ``calls.csv`` that cannot be used at all (no header with ``call_id`` and ``file``)."""


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
