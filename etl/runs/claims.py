"""The claims that give each call to exactly one live worker.

Registration (:func:`etl.runs.registration.register_batch`) writes the batch row and one calls
row per discovered entry. A worker then claims pending calls under its lease
(``etl.runs.leases.Lease``): every call it claims records the lease's key in
``calls.claimed_by`` (``name#key``), and a claim whose key no scorer's lock holds any more is
free at once, while a claim whose key is still locked belongs to a live run and is never taken.
``--stale-minutes`` only applies to claims written by versions without leases (no ``#key``).

Rejected entries (``etl.runs.inbox_entry.CallEntry.error``) are registered as failed calls
with ``extra.rejected = true``; they are never claimed, not even by ``--retry-failed``, because
their path is whatever a ``calls.csv`` said and must not be opened. A rerun whose discovery
accepts the entry (the operator fixed the row) turns it back into a pending call.

A claim ends with its outcome (``etl.runs.results``: scored, failed or rejected), written only
while the claim is still held. Nothing here commits: the caller owns the transactions (one per
claim, one per result).
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.orm import Session

from etl.runs.leases import LOCK_NAMESPACE, SCORER_HOLDER

log = logging.getLogger(__name__)

LEGACY_STALE_S = 1800.0


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
