"""Leases: a worker's claims live exactly as long as the worker does.

A worker that scores calls first takes a :class:`Lease`: a PostgreSQL *session-level advisory
lock* ``(LOCK_NAMESPACE, key)`` held on a connection of its own for as long as the worker runs.
Every call it claims records the key in ``calls.claimed_by`` (``name#key``,
``etl.runs.claims``). PostgreSQL releases the lock the moment the worker's connection ends,
whether the worker finished, raised, was ``kill -9``'d or its machine lost the network; so a
claim whose key no lock holds any more is free at once, and a claim whose key is still locked
belongs to a live run and is never taken. No timeout has to be guessed.

Analysts cannot take the scorer's locks from it. PostgreSQL advisory locks have no privileges:
any login of the database (an analyst too) may take any key, and ``pg_locks`` shows everyone
the keys in use. So a lock counts only when the session holding it belongs to a role that may
write ``calls`` (:data:`SCORER_HOLDER`), which analyst logins never are: a key an analyst holds
never makes a dead worker's claims look alive, a lease simply picks another random key, and a
host's turn held by an analyst is stepped over to the next key of the turn's chain
(``etl.runs.host_turn.HostTurn``), so two scorer runs still exclude each other and neither
waits for her. Advisory locks were kept over row locks on a private table because a row lock
needs a transaction held open for the whole run, whose transaction id would hold back vacuum in
the whole database for as long as the night runs.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import random
import socket
import time
from typing import Self

from sqlalchemy import Connection, Engine, text

log = logging.getLogger(__name__)

# First half of every lease's two-int advisory lock key: keeps ours apart from other users'.
LOCK_NAMESPACE = 0x5E5C_0A11 & 0x7FFF_FFFF

# SQL: whether the session with process id ``l.pid`` belongs to a role that may write calls (the
# scorer's); analyst logins may read analytics views only, so their locks never count.
SCORER_HOLDER = ("EXISTS (SELECT 1 FROM pg_stat_activity a WHERE a.pid = l.pid "
                 "AND has_table_privilege(a.usesysid, 'public.calls', 'UPDATE'))")


def worker_name() -> str:
    """A lease owner name unique on this host: host, process and a tick."""
    return f"{socket.gethostname()}:{os.getpid()}:{time.monotonic_ns() % 1_000_000}"


class LeaseLostError(RuntimeError):
    """The connection holding a worker's lease is gone (its claims are free for others)."""


def _unlock_and_close(conn: Connection, *, namespace: int, key: int) -> None:
    """Release a session advisory lock and close its connection."""
    try:
        conn.execute(text("SELECT pg_advisory_unlock(:ns, :k)"), {"ns": namespace, "k": key})
    except Exception as exc:  # noqa: BLE001 - a dead connection released the lock already
        log.debug("advisory lock (%d, %d): unlock failed (%s)", namespace, key, exc)
    finally:
        conn.close()


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
