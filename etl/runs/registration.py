"""Batch registration: the batch row and one calls row per discovered entry
(``etl.runs.inbox``), in bulk.

Rejected entries (``etl.runs.inbox_entry.CallEntry.error``) are registered as failed calls
with ``extra.rejected = true``; a rerun whose discovery accepts the entry (the operator fixed
the row) turns it back into a pending call. A recording already scored or failed in another
batch of the same model is left out, unless its file changed since (a new version of the
call). Nothing here commits: the caller owns the transaction.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Text, any_, bindparam, select, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import Session

from db.models import Batch, Call
from etl.audio.decode import sha256_file
from etl.runs.inbox_entry import CallEntry

log = logging.getLogger(__name__)

# Call rows in bulk: one statement per chunk, its columns as arrays, never row by row
# (docs/operations.md has the figures). An existing row is replaced only when it
# was rejected, so fixing calls.csv and rerunning works and nothing else is ever undone.
_REGISTER_COLUMNS = ("call_key", "path", "agent_id", "queue", "started_at", "channel_roles",
                     "extra", "status", "error", "file_size", "file_mtime_ns")
_REGISTER_TYPES = ("text", "text", "text", "text", "timestamptz", "jsonb", "jsonb", "text",
                   "text", "bigint", "bigint")
_REGISTER_SQL = text(f"""
INSERT INTO calls (batch_id, {", ".join(_REGISTER_COLUMNS)})
SELECT :batch_id, r.* FROM unnest({", ".join(
    f"CAST(:{c} AS {t}[])" for c, t in zip(_REGISTER_COLUMNS, _REGISTER_TYPES, strict=True))}) AS r
ON CONFLICT (batch_id, call_key) DO UPDATE SET {", ".join(
    f"{c} = EXCLUDED.{c}" for c in _REGISTER_COLUMNS if c != "call_key")}
WHERE (calls.extra ->> 'rejected') IS NOT NULL
""")
_REGISTER_CHUNK = 20_000


def _row(batch_id: int, entry: CallEntry) -> dict[str, Any]:
    """The calls row of one entry: pending, or failed with its reason (a rejection, or a file
    that is not there: ``entry.failure``)."""
    extra = dict(entry.extra)
    if entry.line is not None:
        extra["manifest_line"] = entry.line
    if entry.rejected:
        extra["rejected"] = True
    reason = entry.error or entry.failure
    return {"batch_id": batch_id, "call_key": entry.call_key, "path": str(entry.path),
            "agent_id": entry.agent_id, "queue": entry.queue, "started_at": entry.started_at,
            "channel_roles": entry.channel_roles, "extra": extra,
            "status": "failed" if reason else "pending",
            "error": reason[:2000] if reason else None,
            "file_size": entry.stat[0] if entry.stat else None,
            "file_mtime_ns": entry.stat[1] if entry.stat else None}


def register_batch(
    session: Session,
    *,
    source_path: str,
    batch_date: dt.date,
    model_version_id: int,
    entries: Sequence[CallEntry],
    options: Mapping[str, Any] | None = None,
    skip_done_elsewhere: bool = False,
) -> int:
    """Upsert the batch row and one call row per entry; return ``batches.id``.

    Accepted entries start pending; rejected ones (``entry.error``) and files that are not
    there (``entry.failure``) start failed with their reason, so no worker claims them one by
    one; deferred entries (``entry.deferred``: still being copied) are left for the next run.
    An existing call row is kept as it is, unless it was rejected: then the new entry
    (accepted or rejected again) replaces it, so fixing ``calls.csv`` and rerunning works.

    With ``skip_done_elsewhere`` (the nightly inbox), recordings whose path was already scored
    (or failed) with this model version in any other batch are left out unless the file changed
    since (see :func:`_not_done_elsewhere`), and so are entries rejected there for the same call
    key and path (they are reported once, not every night).
    """
    stmt = pg_insert(Batch).values(
        batch_date=batch_date, source_path=source_path, model_version_id=model_version_id,
        options=dict(options or {}),
    ).on_conflict_do_nothing(index_elements=["source_path", "batch_date", "model_version_id"])
    session.execute(stmt)
    batch_id = session.execute(select(Batch.id).where(
        Batch.source_path == source_path, Batch.batch_date == batch_date,
        Batch.model_version_id == model_version_id)).scalar_one()
    entries = [e for e in entries if not e.deferred]
    if skip_done_elsewhere and entries:
        entries = _not_done_elsewhere(session, entries, batch_id=batch_id,
                                      model_version_id=model_version_id)
    for start in range(0, len(entries), _REGISTER_CHUNK):
        rows = [_row(batch_id, e) for e in entries[start:start + _REGISTER_CHUNK]]
        columns: dict[str, list[Any]] = {c: [r[c] for r in rows] for c in _REGISTER_COLUMNS}
        for c in ("channel_roles", "extra"):
            columns[c] = [json.dumps(v) for v in columns[c]]
        session.execute(_REGISTER_SQL, {"batch_id": batch_id, **columns})
    session.execute(text("UPDATE batches SET n_calls = (SELECT count(*) FROM calls "
                         "WHERE batch_id = :b), status = 'running', finished_at = NULL "
                         "WHERE id = :b"), {"b": batch_id})
    return batch_id


def _not_done_elsewhere(session: Session, entries: Sequence[CallEntry], *, batch_id: int,
                        model_version_id: int) -> list[CallEntry]:
    """``entries`` without the recordings another batch of this model version already scored
    or failed, unless the file changed since: then it is a new version of that call.

    A file whose size and modification time are those registered with its last version is
    unchanged, unread. One whose stat moved is hashed: the same content as the scored version
    (a ``touch``, a copy with its times reset) is unchanged too, and its new stat is stored on
    that version so it is not hashed again; other content is registered again, under the same
    call key, with ``extra.replaces`` (the earlier call's id) and ``extra.version``. A version
    that failed before it was hashed is tried again once its stat moved.
    """
    # one array parameter, not one bind per path: a night may list 100,000 files
    paths = bindparam("paths", [str(e.path) for e in entries], type_=ARRAY(Text))
    earlier = session.execute(
        select(Call.id, Call.path, Call.call_key, Call.extra["rejected"].as_boolean(),
               Call.sha256, Call.file_size, Call.file_mtime_ns,
               Call.extra["version"].as_integer())
        .join(Batch, Batch.id == Call.batch_id).where(
            Batch.model_version_id == model_version_id, Batch.id != batch_id,
            Call.status.in_(("scored", "failed")), Call.path == any_(paths))
        .order_by(Call.id)).all()
    latest = {row.path: row for row in earlier if not row[3]}  # the last version wins
    rejected_before = {(row.path, row.call_key) for row in earlier if row[3]}
    kept: list[CallEntry] = []
    restamp: list[tuple[int, int, int]] = []
    for entry in entries:
        if entry.rejected:
            if (str(entry.path), entry.call_key) not in rejected_before:
                kept.append(entry)
            continue
        before = latest.get(str(entry.path))
        if before is None:
            kept.append(entry)
            continue
        if entry.stat is None or (before.file_size, before.file_mtime_ns) == entry.stat:
            continue
        if before.sha256 is None:
            if before.file_size is None:  # registered without a stat and never hashed
                continue
        else:
            try:
                digest = sha256_file(entry.path)
            except OSError:  # unreadable now: judged again next night
                continue
            if digest == before.sha256:
                restamp.append((before.id, *entry.stat))
                continue
        version = (before[7] or 1) + 1
        log.info("%s changed since call %d was registered: registered again as version %d",
                 entry.call_key, before.id, version)
        kept.append(dataclasses.replace(
            entry, extra={**entry.extra, "replaces": before.id, "version": version}))
    if restamp:
        ids, sizes, mtimes = (list(column) for column in zip(*restamp, strict=True))
        session.execute(text(
            "UPDATE calls c SET file_size = r.size, file_mtime_ns = r.mtime "
            "FROM unnest(CAST(:ids AS int[]), CAST(:sizes AS bigint[]), "
            "CAST(:mtimes AS bigint[])) AS r(id, size, mtime) WHERE c.id = r.id"),
            {"ids": ids, "sizes": sizes, "mtimes": mtimes})
    return kept
