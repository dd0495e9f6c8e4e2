"""Batch registration and claims that know whether their owner is alive.

A worker that scores calls first takes a :class:`Lease`: a PostgreSQL *session-level advisory
lock* ``(LOCK_NAMESPACE, key)`` held on a connection of its own for as long as the worker runs.
Every call it claims records the key in ``calls.claimed_by`` (``name#key``). PostgreSQL
releases the lock the moment the worker's connection ends, whether the worker finished, raised,
was ``kill -9``'d or its machine lost the network; so a claim whose key no lock holds any more
is free at once, and a claim whose key is still locked belongs to a live run and is never
taken. No timeout has to be guessed: ``--stale-minutes`` only applies to claims written by
versions without leases (no ``#key``).

Rejected entries (``etl.runs.inbox.CallEntry.error``) are registered as failed calls with
``extra.rejected = true``; they are never claimed, not even by ``--retry-failed``, because their
path is whatever a ``calls.csv`` said and must not be opened. A rerun whose discovery accepts
the entry (the operator fixed the row) turns it back into a pending call.

Analysts cannot take the scorer's locks from it. PostgreSQL advisory locks have no privileges:
any login of the database (an analyst too) may take any key, and ``pg_locks`` shows everyone
the keys in use. So a lock counts only when the session holding it belongs to a role that may
write ``calls`` (:data:`SCORER_HOLDER`), which analyst logins never are: a key an analyst holds
never makes a dead worker's claims look alive, a lease simply picks another random key, and a
host's turn held by an analyst is stepped over to the next key of the turn's chain
(:class:`HostTurn`), so two scorer runs still exclude each other and neither waits for her.
Advisory locks were kept over row locks on a private table because a row lock needs a
transaction held open for the whole run, whose transaction id would hold back vacuum in the
whole database for as long as the night runs.

A claim ends with its outcome (``etl.runs.results``: scored, failed or rejected), written only
while the claim is still held. Nothing here commits: the caller owns the transactions (one per
claim, one per result).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import errno
import hashlib
import json
import logging
import os
import random
import socket
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Self

from sqlalchemy import Connection, Engine, Text, any_, bindparam, select, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import Session

from db.models import Batch, Call
from etl.audio.decode import sha256_file
from etl.runs.inbox import CallEntry

log = logging.getLogger(__name__)

# First half of every lease's two-int advisory lock key: keeps ours apart from other users'.
LOCK_NAMESPACE = 0x5E5C_0A11 & 0x7FFF_FFFF
LEGACY_STALE_S = 1800.0


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


def worker_name() -> str:
    """A lease owner name unique on this host: host, process and a tick."""
    return f"{socket.gethostname()}:{os.getpid()}:{time.monotonic_ns() % 1_000_000}"


def first_line(exc: BaseException) -> str:
    """An exception as the one line stored as a call's error or shown to the operator."""
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def is_host_fault(exc: BaseException) -> bool:
    """Whether ``exc`` is this host's fault, not the recording's: a full disk (ENOSPC) while
    scoring would fail every call after it, so it ends the run (the call in hand stays claimed
    by the run's lease, free again for the rerun) instead of failing them one by one."""
    return isinstance(exc, OSError) and exc.errno == errno.ENOSPC


class LeaseLostError(RuntimeError):
    """The connection holding a worker's lease is gone (its claims are free for others)."""


# --------------------------------------------------------------------------------------------
# One run per host and batch
# --------------------------------------------------------------------------------------------

# Second advisory-lock namespace: a host's turn at a batch (see HostTurn).
TURN_NAMESPACE = (LOCK_NAMESPACE + 1) & 0x7FFF_FFFF
# How many keys a turn's chain has: an analyst holding all of them only makes runs of the host
# proceed side by side (the claims still split the work), never wait.
TURN_CHAIN = 8

# SQL: whether the session with process id ``l.pid`` belongs to a role that may write calls (the
# scorer's); analyst logins may read analytics views only, so their locks never count.
SCORER_HOLDER = ("EXISTS (SELECT 1 FROM pg_stat_activity a WHERE a.pid = l.pid "
                 "AND has_table_privilege(a.usesysid, 'public.calls', 'UPDATE'))")

# Who holds the advisory lock (:ns, :k) in this database: (scorer sessions, other sessions).
_HOLDERS_SQL = text(f"""
SELECT count(*) FILTER (WHERE {SCORER_HOLDER}) AS scorer,
       count(*) FILTER (WHERE NOT {SCORER_HOLDER}) AS other,
       string_agg(CASE WHEN NOT {SCORER_HOLDER} THEN
                  coalesce(pg_get_userbyid(a.usesysid), '?') || ' (pid ' || l.pid || ')' END,
                  ', ') AS others
FROM pg_locks l LEFT JOIN pg_stat_activity a ON a.pid = l.pid
WHERE l.locktype = 'advisory' AND l.granted AND l.classid::bigint = :ns
  AND l.objid::bigint = :k AND l.objsubid = 2
  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
""")


def turn_key(host: str, batch_id: int, link: int = 0) -> int:
    """A stable 31-bit key for (host, batch), ``link`` of its chain (0 first)."""
    salt = f"\0{link}" if link else ""
    digest = hashlib.sha256(f"{host}\0{batch_id}{salt}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFF_FFFF


def _unlock_and_close(conn: Connection, *, namespace: int, key: int) -> None:
    """Release a session advisory lock and close its connection."""
    try:
        conn.execute(text("SELECT pg_advisory_unlock(:ns, :k)"), {"ns": namespace, "k": key})
    except Exception as exc:  # noqa: BLE001 - a dead connection released the lock already
        log.debug("advisory lock (%d, %d): unlock failed (%s)", namespace, key, exc)
    finally:
        conn.close()


class HostTurn:
    """This host's turn at scoring a batch: one run per host at a time.

    A run's worker processes already use the host's cores; a second run of the same batch on
    the same host would only add processes competing for them (and pay its start-up again), so
    it waits for the turn instead and then scores whatever is left: nothing when the first run
    finished, everything it had not scored when it died (the lock is released with its
    connection, like a lease). Runs on other hosts take their own turn and share the work
    through the claims.

    The turn is the first key of a chain of :data:`TURN_CHAIN` keys that no analyst session
    holds: a run waits only for a key a scorer holds, and steps over one held by anybody
    else (logged with the holder's name). :attr:`bypassed` lists those holders; when every key
    is held by others the run goes on without a turn (:attr:`key` is None).
    """

    def __init__(self, engine: Engine, *, batch_id: int, host: str | None = None,
                 poll_s: float = 0.25) -> None:
        self._engine = engine
        host = host or socket.gethostname()
        self.chain = [turn_key(host, batch_id, link) for link in range(TURN_CHAIN)]
        self.key: int | None = self.chain[0]
        self.poll_s = poll_s
        self.waited = False  # another scorer held the turn when this run asked for it
        self.waited_s = 0.0
        self.bypassed: list[str] = []
        self._conn: Connection | None = None

    def _take(self, conn: Connection) -> int | None | bool:
        """One walk down the chain: the key taken, None (every key held by others) or False
        (a scorer holds the turn: wait)."""
        for key in self.chain:
            params = {"ns": TURN_NAMESPACE, "k": key}
            if conn.execute(text("SELECT pg_try_advisory_lock(:ns, :k)"), params).scalar_one():
                return key
            holders = conn.execute(_HOLDERS_SQL, params).one()
            if holders.scorer or not holders.other:  # a run of ours, or just released
                return False
            if holders.others not in self.bypassed:
                log.warning("batch turn key %d is held by %s, not a scorer: stepped over",
                            key, holders.others)
                self.bypassed.append(holders.others)
        return None

    def __enter__(self) -> Self:
        conn = self._engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        started = time.monotonic()
        try:
            # polled rather than blocking in pg_advisory_lock, so Ctrl-C stops a waiting run
            while (taken := self._take(conn)) is False:
                self.waited = True
                time.sleep(self.poll_s)
        except BaseException:
            conn.close()
            raise
        self.waited_s = time.monotonic() - started if self.waited else 0.0
        self.key = taken if isinstance(taken, int) else None
        if self.key is None:
            log.warning("every batch turn key is held by sessions that are not scorers (%s): "
                        "scoring without a turn", "; ".join(self.bypassed))
            conn.close()
        else:
            self._conn = conn
        return self

    def __exit__(self, *exc: object) -> None:
        if self._conn is not None and self.key is not None:
            _unlock_and_close(self._conn, namespace=TURN_NAMESPACE, key=self.key)
            self._conn = None


# --------------------------------------------------------------------------------------------
# Leases
# --------------------------------------------------------------------------------------------


class Lease:
    """A live worker's advisory lock, held on a dedicated autocommit connection.

    Use as a context manager; :attr:`owner` (``name#key``) is what claims record.
    """

    def __init__(self, engine: Engine, *, name: str) -> None:
        self._engine = engine
        self.name = name[:100]
        self.key = 0
        self.started_at: dt.datetime | None = None  # the server's clock when the lock was taken
        self._conn: Connection | None = None

    @property
    def owner(self) -> str:
        return f"{self.name}#{self.key}"

    def acquire(self) -> Self:
        """Open the connection and lock a fresh random key (retrying the rare collision)."""
        self.release()
        conn = self._engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        rng = random.SystemRandom()
        for _ in range(100):
            key = rng.randrange(1, 2**31)
            row = conn.execute(text("SELECT pg_try_advisory_lock(:ns, :k) AS ok, now() AS t"),
                               {"ns": LOCK_NAMESPACE, "k": key}).one()
            if row.ok:
                self._conn, self.key, self.started_at = conn, key, row.t
                return self
        conn.close()
        raise LeaseLostError("could not take a claim lease (100 lock keys in use)")

    def check(self) -> None:
        """Raise :class:`LeaseLostError` if the lease connection has died."""
        if self._conn is None:
            raise LeaseLostError("the lease was not acquired")
        try:
            self._conn.execute(text("SELECT 1"))
        except Exception as exc:  # any failure means the lock may be gone
            raise LeaseLostError(f"the connection holding claim lease {self.owner} "
                                 "was lost") from exc

    def release(self) -> None:
        if self._conn is not None:
            _unlock_and_close(self._conn, namespace=LOCK_NAMESPACE, key=self.key)
            self._conn = None

    def __enter__(self) -> Self:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


# Keys of the leases live right now in this database: granted advisory locks in our namespace
# held by scorer sessions (a key an analyst takes must not keep a dead worker's claims).
_LIVE_KEYS = f"""
SELECT l.objid::bigint AS k FROM pg_locks l
WHERE l.locktype = 'advisory' AND l.granted AND l.classid::bigint = {LOCK_NAMESPACE}
  AND l.objsubid = 2
  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND {SCORER_HOLDER}
"""

# A claimed call is free when its owner's lease is not live; claims without a key (written
# before leases existed) fall back to their age.
_FREE_CLAIM = """
(c.status = 'claimed' AND CASE
    WHEN c.claimed_by ~ '#[0-9]+$'
        THEN substring(c.claimed_by from '#([0-9]+)$')::bigint NOT IN (SELECT k FROM live)
    ELSE c.claimed_at < now() - make_interval(secs => :stale) END)
"""

_CLAIMABLE = f"""
(c.status = 'pending' OR {_FREE_CLAIM}
 OR (CAST(:retry_before AS timestamptz) IS NOT NULL AND c.status = 'failed'
     AND (c.extra ->> 'rejected') IS NULL
     AND (c.claimed_at IS NULL OR c.claimed_at < CAST(:retry_before AS timestamptz))))
"""

_CLAIM_SQL = text(f"""
WITH live AS MATERIALIZED ({_LIVE_KEYS})
UPDATE calls SET status = 'claimed', claimed_by = :worker, claimed_at = now(), error = NULL
WHERE id IN (
    SELECT c.id FROM calls c
    WHERE c.batch_id = :batch AND {_CLAIMABLE}
    ORDER BY c.id
    LIMIT :limit
    FOR UPDATE SKIP LOCKED)
RETURNING id, call_key, path, channel_roles
""")

_COUNT_SQL = text(f"""
WITH live AS MATERIALIZED ({_LIVE_KEYS})
SELECT count(*) FILTER (WHERE {_CLAIMABLE}) AS claimable,
       count(*) FILTER (WHERE c.status = 'claimed' AND NOT {_FREE_CLAIM}) AS held
FROM calls c WHERE c.batch_id = :batch
""")


@dataclass(frozen=True, slots=True)
class ClaimedCall:
    id: int
    call_key: str
    path: Path
    channel_roles: dict[str, str]


def claim_next(session: Session, *, batch_id: int, worker: str,
               stale_after_s: float = LEGACY_STALE_S,
               retry_failed_before: dt.datetime | None = None) -> ClaimedCall | None:
    """Claim the next pending (or orphaned) call of the batch for ``worker``; None when done.

    ``worker`` is a :attr:`Lease.owner` (``name#key``): the claim lives exactly as long as
    that lease. ``FOR UPDATE SKIP LOCKED`` makes concurrent claimers take different rows
    without waiting; commit right after so the claim is visible to the others.
    ``stale_after_s`` only ages out claims without a lease key (older versions).
    ``retry_failed_before`` (``--retry-failed``): also claim failed calls last tried before
    that time (the run's start), so a call failing again in this run is not retried forever.
    """
    claimed = claim_calls(session, batch_id=batch_id, worker=worker, limit=1,
                          stale_after_s=stale_after_s, retry_failed_before=retry_failed_before)
    return claimed[0] if claimed else None


def claim_calls(session: Session, *, batch_id: int, worker: str, limit: int,
                stale_after_s: float = LEGACY_STALE_S,
                retry_failed_before: dt.datetime | None = None) -> list[ClaimedCall]:
    """Up to ``limit`` claimable calls in one statement, in call order (as :func:`claim_next`);
    empty when none is left."""
    rows = session.execute(_CLAIM_SQL, {"batch": batch_id, "worker": worker, "limit": limit,
                                        "stale": float(stale_after_s),
                                        "retry_before": retry_failed_before}).all()
    return [ClaimedCall(r.id, r.call_key, Path(r.path), dict(r.channel_roles or {}))
            for r in sorted(rows, key=lambda r: r.id)]


def count_work(session: Session, *, batch_id: int, stale_after_s: float = LEGACY_STALE_S,
               retry_failed_before: dt.datetime | None = None) -> tuple[int, int]:
    """``(claimable, held)``: calls a new worker could claim now, and calls live runs hold."""
    row = session.execute(_COUNT_SQL, {"batch": batch_id, "stale": float(stale_after_s),
                                       "retry_before": retry_failed_before}).one()
    return int(row.claimable), int(row.held)


def release_claims(session: Session, *, owner: str) -> int:
    """Put ``owner``'s unfinished claims back to pending (a worker stopping cleanly)."""
    result = session.execute(text(
        "UPDATE calls SET status = 'pending', claimed_by = NULL, claimed_at = NULL "
        "WHERE status = 'claimed' AND claimed_by = :o"), {"o": owner})
    return int(result.rowcount)  # type: ignore[attr-defined]


# --------------------------------------------------------------------------------------------
# Registration
# --------------------------------------------------------------------------------------------


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
