"""Analysts cannot steer the scorer: locks they take stall nothing, limits they lift on
themselves come back, and they cannot fill the disk with temporary tables (issue 25 item 5).

Every test logs in as a real analyst (a password login in ser_analyst) over its own connection.
"""

from __future__ import annotations

import datetime as dt
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg2
import pytest
from sqlalchemy import Engine, make_url, text
from typer.testing import CliRunner

from db.analysts import effective_limits, enforce_analyst_policy
from db.engine import session_scope
from etl.runs.batch import RunReport, score_batch
from etl.runs.claims import claim_next, count_work
from etl.runs.host_turn import TURN_CHAIN, TURN_NAMESPACE, HostTurn, turn_key
from etl.runs.inbox import discover_calls
from etl.runs.leases import LOCK_NAMESPACE, Lease
from etl.runs.registration import register_batch
from etl.scoring.config import ScoringConfig
from etl.synthetic.calls import generate_calls
from etl.synthetic.clips import ClipBank

CONFIG = ScoringConfig(max_duration_s=45.0)
PASSWORD = "analyst-password"


@dataclass
class Analyst:
    name: str
    dsn: dict[str, object]

    def connect(self) -> psycopg2.extensions.connection:
        conn = psycopg2.connect(**self.dsn, password=PASSWORD)
        conn.autocommit = True
        return conn


@pytest.fixture()
def analyst(engine: Engine) -> Iterator[Analyst]:
    """A login in ser_analyst with a password, as `ser db analyst add` makes it."""
    name = f"analyst_{uuid.uuid4().hex[:8]}"
    with engine.begin() as conn:
        conn.execute(text(f"CREATE ROLE \"{name}\" LOGIN PASSWORD '{PASSWORD}' IN ROLE "
                          "ser_analyst"))
    url = make_url(engine.url.render_as_string(hide_password=False))
    dsn = {"dbname": url.database, "user": name, "host": url.host or url.query.get("host"),
           "port": url.port or 5432}
    try:
        yield Analyst(name, dsn)
    finally:
        with engine.begin() as conn:
            conn.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                              "WHERE usename = :n"), {"n": name})
            conn.execute(text(f'DROP ROLE IF EXISTS "{name}"'))


def _pending_batch(engine: Engine, model_id: int, bank: ClipBank, folder: Path, *, seed: int,
                   day: dt.date) -> int:
    generate_calls(folder, n_calls=3, minutes=0.15, bank=bank, seed=seed)
    with session_scope(engine) as session:
        return register_batch(session, source_path=str(folder.resolve()), batch_date=day,
                              model_version_id=model_id, entries=discover_calls(folder))


def _in_thread(run: Callable[[], object]) -> tuple[threading.Thread, list[object]]:
    out: list[object] = []
    thread = threading.Thread(target=lambda: out.append(run()), daemon=True)
    thread.start()
    return thread, out


def test_locks_an_analyst_holds_stall_no_run_and_keep_no_dead_claim(
        engine: Engine, model_id: int, bank: ClipBank, tmp_path: Path,
        analyst: Analyst) -> None:
    import socket

    day = dt.date(2024, 6, 3)
    batch_id = _pending_batch(engine, model_id, bank, tmp_path, seed=61, day=day)
    # a worker claims a call and dies; its key is visible to everyone (pg_locks) meanwhile
    dead = Lease(engine, name="dead-worker").acquire()
    with session_scope(engine) as session:
        orphan = claim_next(session, batch_id=batch_id, worker=dead.owner)
    assert orphan is not None
    dead_key = dead.key
    dead.release()

    conn = analyst.connect()
    try:
        with conn.cursor() as cur:
            # every key of this host's turn at the batch, and the dead worker's lease key
            host = socket.gethostname()
            for link in range(TURN_CHAIN):
                cur.execute("SELECT pg_try_advisory_lock(%s, %s)",
                            (TURN_NAMESPACE, turn_key(host, batch_id, link)))
                assert cur.fetchone() == (True,)
            cur.execute("SELECT pg_try_advisory_lock(%s, %s)", (LOCK_NAMESPACE, dead_key))
            assert cur.fetchone() == (True,)
        with session_scope(engine) as session:  # her lock does not make the claim look alive
            assert count_work(session, batch_id=batch_id) == (3, 0)
        thread, reports = _in_thread(lambda: score_batch(
            engine, tmp_path, batch_date=day, workers=1, config=CONFIG))
        thread.join(timeout=300)
        assert not thread.is_alive() and reports, "the run waited for the analyst's locks"
        report = reports[0]
        assert isinstance(report, RunReport)
        assert (report.n_scored, report.run_scored, report.n_held) == (3, 3, 0)
    finally:
        conn.close()


def test_the_host_turn_steps_over_an_analysts_key_and_still_excludes_a_second_run(
        engine: Engine, analyst: Analyst) -> None:
    batch_id = 987_654
    conn = analyst.connect()
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT pg_try_advisory_lock(%s, %s)",
                        (TURN_NAMESPACE, turn_key("host-a", batch_id)))
            assert cur.fetchone() == (True,)
        first = HostTurn(engine, batch_id=batch_id, host="host-a").__enter__()
        assert first.key == turn_key("host-a", batch_id, 1)
        assert first.bypassed and analyst.name in first.bypassed[0]
        # a second run of the same host waits for the first (a scorer), not for her
        second = HostTurn(engine, batch_id=batch_id, host="host-a", poll_s=0.05)
        thread, _ = _in_thread(second.__enter__)
        thread.join(timeout=1.0)
        assert thread.is_alive()
        first.__exit__(None, None, None)
        thread.join(timeout=60)
        assert not thread.is_alive() and second.key == turn_key("host-a", batch_id, 1)
        second.__exit__(None, None, None)
    finally:
        conn.close()


def _settings_of(engine: Engine, role: str) -> list[tuple[int, str]]:
    with engine.connect() as conn:
        return [(int(r[0]), r[1]) for r in conn.execute(text(
            "SELECT s.setdatabase, unnest(s.setconfig) FROM pg_db_role_setting s "
            "JOIN pg_roles r ON r.oid = s.setrole WHERE r.rolname = :r ORDER BY 1, 2"),
            {"r": role})]


def test_limits_an_analyst_lifts_on_herself_are_shown_and_put_back(
        cli_env: dict[str, str], engine: Engine, analyst: Analyst) -> None:
    from ser.cli import app

    runner = CliRunner()
    with engine.begin() as conn:
        enforce_analyst_policy(conn)  # the fixture's login gets ser_analyst's limits
    conn = analyst.connect()
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT current_database()")
            database = cur.fetchone()[0]
            # PostgreSQL lets any role set its own defaults; both scopes, as she would
            cur.execute(f'ALTER ROLE "{analyst.name}" IN DATABASE "{database}" '
                        "SET statement_timeout = 0")
            cur.execute(f'ALTER ROLE "{analyst.name}" SET idle_in_transaction_session_timeout = 0')
            cur.execute(f'ALTER ROLE "{analyst.name}" IN DATABASE "{database}" '
                        "RESET idle_in_transaction_session_timeout")
    finally:
        conn.close()
    with engine.connect() as conn:
        lifted = effective_limits(conn, [analyst.name])[analyst.name]
    assert lifted["statement_timeout"] == "0"
    assert lifted["idle_in_transaction_session_timeout"] == "0"

    shown = runner.invoke(app, ["db", "analyst", "limits"])
    assert shown.exit_code == 0, shown.output
    assert f"{analyst.name}.statement_timeout=0" in shown.output  # said, then put back
    assert f"{analyst.name}.idle_in_transaction_session_timeout=0" in shown.output
    assert "statement_timeout=5min" in shown.output
    assert f"{analyst.name} gets" not in shown.output  # nothing differs any more
    assert all(not value.endswith("=0") for _db, value in _settings_of(engine, analyst.name))
    conn = analyst.connect()
    try:
        with conn.cursor() as cur:
            cur.execute("SHOW statement_timeout")
            assert cur.fetchone() == ("5min",)
            cur.execute("SHOW idle_in_transaction_session_timeout")
            assert cur.fetchone() == ("10min",)
    finally:
        conn.close()


def test_analysts_cannot_create_temporary_tables(engine: Engine, analyst: Analyst) -> None:
    with engine.begin() as conn:
        report = enforce_analyst_policy(conn)
        again = enforce_analyst_policy(conn)
        assert conn.execute(text(
            "SELECT has_database_privilege(current_user, current_database(), 'TEMPORARY')"
        )).scalar_one()
    assert report.skipped == [] and not again.temp_revoked  # once is enough
    conn = analyst.connect()
    try:
        with conn.cursor() as cur, pytest.raises(psycopg2.errors.InsufficientPrivilege):
            cur.execute("CREATE TEMP TABLE filler AS SELECT g FROM generate_series(1, 10) g")
    finally:
        conn.close()
