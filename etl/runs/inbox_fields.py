"""The fields of one ``calls.csv`` row, checked and made into its entry.

Channel roles (``customer_channel``/``agent_channel`` or ``channel_roles``), ``started_at`` and
the ``agent_id``/``queue`` labels of a row whose file is inside the batch become a
:class:`etl.runs.inbox_entry.CallEntry`; a field that does not parse or does not fit its column
(a ``started_at`` that is not ISO 8601 or outside 1970-2099, a bad or repeated channel role, a
label longer than the database holds) rejects the row, with the reason in its entry.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from pathlib import Path

from etl.runs.inbox_entry import CallEntry
from etl.runs.inbox_manifest import _KNOWN_COLUMNS
from etl.runs.inbox_storable import MAX_LABEL_CHARS

ROLES = ("agent", "customer")
_CHANNEL_WORDS = {"left": 0, "l": 0, "0": 0, "ch0": 0, "right": 1, "r": 1, "1": 1, "ch1": 1}
# started_at outside [EARLIEST_START, LATEST_START) is a typo or a placeholder (9999-12-31),
# never a call; such a row fails instead of reaching the date columns and the reports.
EARLIEST_START = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
LATEST_START = dt.datetime(2100, 1, 1, tzinfo=dt.UTC)


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
