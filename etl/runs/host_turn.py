"""One run per host and batch: a host's turn at scoring a batch (:class:`HostTurn`).

The turn is a session-level advisory lock in its own namespace (:data:`TURN_NAMESPACE`), held
like a lease (``etl.runs.leases``): released the moment its run's connection ends. A lock held
by a session that may not write ``calls`` (an analyst's) does not count
(``etl.runs.leases.SCORER_HOLDER``): the run steps over it to the next key of the turn's chain.
"""

from __future__ import annotations

import hashlib
import logging
import socket
import time
from typing import Self

from sqlalchemy import Connection, Engine, text

from etl.runs.leases import LOCK_NAMESPACE, SCORER_HOLDER, _unlock_and_close

log = logging.getLogger(__name__)

# Second advisory-lock namespace: a host's turn at a batch (see HostTurn).
TURN_NAMESPACE = (LOCK_NAMESPACE + 1) & 0x7FFF_FFFF
# How many keys a turn's chain has: an analyst holding all of them only makes runs of the host
# proceed side by side (the claims still split the work), never wait.
TURN_CHAIN = 8

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
