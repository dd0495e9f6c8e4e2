"""Batch boundaries: scoring stays inside its folder, loses no row, reports failure honestly
(exit codes, flow state, a lost database), never fights itself (leases), prints this run's
speed, and analysts get limits and authenticated logins. Every test asserts stored rows."""

from __future__ import annotations

import csv
import datetime as dt
import os
import signal
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import psycopg2
import pytest
from sqlalchemy import Engine, make_url, text
from typer.testing import CliRunner

from db.engine import make_engine, session_scope
from etl.runs.batch import DatabaseLostError, score_batch
from etl.runs.claims import claim_next
from etl.runs.host_turn import TURN_NAMESPACE, HostTurn
from etl.runs.inbox import discover_calls
from etl.runs.inbox_confinement import OUTSIDE
from etl.runs.leases import Lease
from etl.runs.registration import register_batch
from etl.scoring.config import ScoringConfig
from etl.synthetic.calls import generate_calls
from etl.synthetic.clips import ClipBank
from tests.utils.nightly import train_tiny_model

CONFIG = ScoringConfig(max_duration_s=45.0)
REPO = Path(__file__).resolve().parents[1]


def _calls(engine: Engine, batch_id: int) -> dict[str, dict[str, object]]:
    with engine.connect() as conn:
        rows = conn.execute(text(
            "SELECT c.call_key, c.status, c.error, c.sha256, c.duration_s, c.extra, "
            "(SELECT count(*) FROM call_segments s WHERE s.call_id = c.id) AS segments "
            "FROM calls c WHERE c.batch_id = :b"), {"b": batch_id}).mappings().all()
    return {r["call_key"]: dict(r) for r in rows}


def _write_manifest(folder: Path, rows: list[list[str]]) -> None:
    with (folder / "calls.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["call_id", "file", "agent_id", "queue", "started_at", "customer_channel"])
        writer.writerows(rows)


# --------------------------------------------------------------------------------------------
# 1. Containment
# --------------------------------------------------------------------------------------------


def test_paths_outside_the_batch_are_failed_unopened_and_errors_name_no_host_path(
        engine: Engine, model_id: int, bank: ClipBank, tmp_path: Path) -> None:
    batch, other = tmp_path / "batch", tmp_path / "other"
    generate_calls(batch, n_calls=1, minutes=0.15, bank=bank, seed=3)
    generate_calls(other, n_calls=1, minutes=0.15, bank=bank, seed=4)
    (batch / "calls.csv").unlink()
    outside = other / "call_0001.wav"
    (batch / "linked.wav").symlink_to(outside)  # unlisted symlink pointing elsewhere
    (batch / "sub").mkdir()
    (batch / "sub" / "inner.wav").symlink_to(batch / "call_0001.wav")  # inside: same as "good"
    _write_manifest(batch, [
        ["good", "call_0001.wav", "", "", "", ""],
        ["dotdot", "../other/call_0001.wav", "", "", "", ""],
        ["passwd", "../../../../../../etc/passwd", "", "", "", ""],
        ["absolute", str(outside), "", "", "", ""],
        ["gone", "gone.wav", "", "", "", ""],
    ])
    report = score_batch(engine, batch, batch_date=dt.date(2024, 5, 1), workers=1,
                         config=CONFIG)
    calls = _calls(engine, report.batch_id)
    assert set(calls) == {"good", "dotdot", "passwd", "absolute", "gone", "linked"}
    for key in ("dotdot", "passwd", "absolute", "linked"):
        row = calls[key]
        assert row["status"] == "failed" and str(row["error"]).startswith(OUTSIDE), row
        # never opened: nothing read from it, nothing scored
        assert row["sha256"] is None and row["duration_s"] is None and row["segments"] == 0
        assert row["extra"]["rejected"] is True  # type: ignore[index]
    assert "line 3" in str(calls["dotdot"]["error"]) and "'..'" in str(calls["dotdot"]["error"])
    assert "absolute path" in str(calls["absolute"]["error"])
    assert calls["good"]["status"] == "scored" and calls["good"]["segments"]
    assert calls["gone"]["error"] == "file not found: gone.wav"
    with engine.connect() as conn:  # what analysts see names no host path
        errors = conn.execute(text("SELECT error FROM analytics.calls WHERE batch_id = :b AND "
                                   "error IS NOT NULL"), {"b": report.batch_id}).scalars().all()
    assert len(errors) == 5 and not any(str(tmp_path) in e or "/etc" in e for e in errors)
    assert report.n_rejected == 4

    # --retry-failed never opens a rejected call either
    again = score_batch(engine, batch, batch_date=dt.date(2024, 5, 1), workers=1,
                        config=ScoringConfig(max_duration_s=45.0, retry_failed=True))
    assert _calls(engine, again.batch_id)["dotdot"] == calls["dotdot"]

    # an operator-listed extra root is allowed
    allowed = score_batch(engine, batch, batch_date=dt.date(2024, 5, 2), workers=1,
                          config=CONFIG, allowed_roots=(other.resolve(),))
    widened = _calls(engine, allowed.batch_id)
    assert widened["absolute"]["status"] == "scored" and widened["dotdot"]["status"] == "scored"
    assert "linked" not in widened  # the same file as the listed row, scored once
    assert widened["passwd"]["status"] == "failed"


# --------------------------------------------------------------------------------------------
# 2. Duplicates and bad rows
# --------------------------------------------------------------------------------------------


def test_duplicate_and_bad_rows_fail_alone_with_line_numbers(
        engine: Engine, model_id: int, bank: ClipBank, tmp_path: Path) -> None:
    generate_calls(tmp_path, n_calls=4, minutes=0.15, bank=bank, seed=7)
    _write_manifest(tmp_path, [
        ["C1", "call_0001.wav", "A1", "q", "2024-05-03T10:00:00", ""],
        ["C1", "call_0002.wav", "A1", "q", "", ""],  # line 3: duplicate id
        ["C3", "call_0003.wav", "A1", "q", "yesterday", ""],  # line 4: bad date
        ["C4", "call_0004.wav", "A1", "q", "", "middle"],  # line 5: bad channel
    ])
    day = dt.date(2024, 5, 3)
    with pytest.raises(ValueError, match="line 3"):  # --strict: all or nothing
        score_batch(engine, tmp_path, batch_date=day, workers=1, config=CONFIG, strict=True)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM batches WHERE batch_date = :d"),
                            {"d": day}).scalar_one() == 0
    report = score_batch(engine, tmp_path, batch_date=day, workers=1, config=CONFIG)
    calls = _calls(engine, report.batch_id)
    assert set(calls) == {"C1", "C1#line3", "C3", "C4"}  # every recording has a row
    assert calls["C1"]["status"] == "scored"
    assert "line 3" in str(calls["C1#line3"]["error"]) and "duplicate" in str(
        calls["C1#line3"]["error"])
    assert "line 4" in str(calls["C3"]["error"]) and "started_at" in str(calls["C3"]["error"])
    assert "line 5" in str(calls["C4"]["error"]) and "customer_channel" in str(
        calls["C4"]["error"])
    assert (report.n_scored, report.n_failed) == (1, 3)

    # fixing the rows and rerunning scores them (rejections are not final)
    _write_manifest(tmp_path, [
        ["C1", "call_0001.wav", "A1", "q", "2024-05-03T10:00:00", ""],
        ["C3", "call_0003.wav", "A1", "q", "2024-05-03T11:00:00", ""],
        ["C4", "call_0004.wav", "A1", "q", "", "right"],
    ])
    fixed = score_batch(engine, tmp_path, batch_date=day, workers=1, config=CONFIG)
    calls = _calls(engine, fixed.batch_id)
    assert calls["C3"]["status"] == "scored" and calls["C4"]["status"] == "scored"
    assert calls["C1#line3"]["status"] == "failed"  # the old duplicate row stays on record


def test_unlisted_file_named_like_a_listed_call_is_not_dropped(tmp_path: Path) -> None:
    (tmp_path / "a.wav").write_bytes(b"x")
    (tmp_path / "b.wav").write_bytes(b"x")
    _write_manifest(tmp_path, [["a", "b.wav", "", "", "", ""]])
    entries = {e.call_key: e for e in discover_calls(tmp_path)}
    assert set(entries) == {"a", "a#file"}
    assert entries["a#file"].error and "a.wav" in entries["a#file"].error


# --------------------------------------------------------------------------------------------
# 3. Exit codes, flow state, a lost database
# --------------------------------------------------------------------------------------------


def test_database_lost_mid_run_is_one_resumable_error(engine: Engine, model_id: int,
                                                      bank: ClipBank, tmp_path: Path) -> None:
    generate_calls(tmp_path, n_calls=2, minutes=0.15, bank=bank, seed=12)
    url = make_url(engine.url.render_as_string(hide_password=False))
    dead = make_engine(url.set(username="ser", password="s3cret", host="127.0.0.1", port=9,
                               query={}).render_as_string(hide_password=False))
    with pytest.raises(DatabaseLostError) as lost:
        score_batch(dead, tmp_path, batch_date=dt.date(2024, 5, 5), workers=1, config=CONFIG)
    message = str(lost.value)
    assert "\n" not in message and "ser@127.0.0.1:9/" in message and "s3cret" not in message
    assert "rerun" in message and "resumes" in message
    with engine.connect() as conn:  # nothing half-registered on the real server either
        assert conn.execute(text("SELECT count(*) FROM batches WHERE batch_date = '2024-05-05'")
                            ).scalar_one() == 0


def test_nightly_task_retries_only_a_lost_database() -> None:
    from prefect.states import Completed, Failed

    from flows.nightly import DB_RETRY_DELAYS_S, _database_lost, outcome, score_batch_task

    assert score_batch_task.retries == len(DB_RETRY_DELAYS_S) >= 2
    assert score_batch_task.retry_delay_seconds == DB_RETRY_DELAYS_S
    assert DB_RETRY_DELAYS_S == sorted(DB_RETRY_DELAYS_S)  # backoff
    lost = Failed(data=DatabaseLostError("lost the database x"))
    bad_csv = Failed(data=ValueError("calls.csv lacks column(s)"))
    assert _database_lost(score_batch_task, None, lost)  # type: ignore[arg-type]
    assert not _database_lost(score_batch_task, None, bad_csv)  # type: ignore[arg-type]
    assert not _database_lost(score_batch_task, None, Completed())  # type: ignore[arg-type]
    base = {"batch_id": 1, "n_calls": 3, "n_scored": 3, "n_failed": 0}
    assert outcome(base).is_completed()
    assert outcome({**base, "n_scored": 2, "n_failed": 1}).is_failed()


# --------------------------------------------------------------------------------------------
# 4. Claims that know whether their owner is alive
# --------------------------------------------------------------------------------------------


def _three_pending_calls(engine: Engine, model_id: int, bank: ClipBank, folder: Path, *,
                        seed: int, day: dt.date) -> int:
    """Generate three short calls in ``folder`` and register them as a pending batch."""
    generate_calls(folder, n_calls=3, minutes=0.15, bank=bank, seed=seed)
    with session_scope(engine) as session:
        return register_batch(session, source_path=str(folder.resolve()), batch_date=day,
                              model_version_id=model_id, entries=discover_calls(folder))


def test_live_claims_are_never_taken_and_dead_ones_are_free_at_once(
        engine: Engine, model_id: int, bank: ClipBank, tmp_path: Path) -> None:
    day = dt.date(2024, 5, 6)
    batch_id = _three_pending_calls(engine, model_id, bank, tmp_path, seed=14, day=day)
    lease = Lease(engine, name="other-run").acquire()
    with session_scope(engine) as session:
        held = claim_next(session, batch_id=batch_id, worker=lease.owner)
    assert held is not None
    # --stale-minutes 0 used to take every claim: a live lease's claim survives it
    report = score_batch(engine, tmp_path, batch_date=day, workers=1,
                         config=ScoringConfig(max_duration_s=45.0, stale_claim_minutes=0.0))
    calls = _calls(engine, batch_id)
    assert calls[held.call_key]["status"] == "claimed" and calls[held.call_key]["segments"] == 0
    assert (report.n_scored, report.n_held) == (2, 1)
    lease.release()  # its owner is gone: the next run takes the call, no flag needed
    report = score_batch(engine, tmp_path, batch_date=day, workers=1, config=CONFIG)
    assert (report.n_scored, report.n_held, report.run_scored) == (3, 0, 1)


def test_a_second_run_on_the_host_waits_its_turn_then_scores_only_what_is_left(
        engine: Engine, model_id: int, bank: ClipBank, tmp_path: Path) -> None:
    import threading

    day = dt.date(2024, 5, 10)
    batch_id = _three_pending_calls(engine, model_id, bank, tmp_path, seed=17, day=day)
    first = HostTurn(engine, batch_id=batch_id).__enter__()  # another run's turn on this host
    reports: list[object] = []
    waiting = threading.Thread(target=lambda: reports.append(score_batch(
        engine, tmp_path, batch_date=day, workers=1, config=CONFIG)))
    waiting.start()
    waiting.join(timeout=1.5)
    assert waiting.is_alive() and not reports  # it waits instead of competing for the cores
    assert all(c["status"] == "pending" for c in _calls(engine, batch_id).values())
    # other hosts (other keys) and other batches take their own turn meanwhile
    with HostTurn(engine, batch_id=batch_id, host="another-host") as other:
        assert other.key != first.key and _turns_held(engine) >= {first.key, other.key}
    first.__exit__(None, None, None)  # ended (finished, failed or killed): the turn is free
    waiting.join(timeout=120)
    report = reports[0]
    assert report.run_scored == 3 and report.waited_for_turn  # type: ignore[attr-defined]
    # a run after a finished one loads no model, starts nothing and waits for nobody
    again = score_batch(engine, tmp_path, batch_date=day, workers=1, config=CONFIG)
    assert again.run_scored == 0 and not again.waited_for_turn


def _turns_held(engine: Engine) -> set[int]:
    """The host-turn keys whose advisory locks are granted now (to any connection)."""
    with engine.connect() as conn:
        return set(conn.execute(text(
            "SELECT objid::bigint FROM pg_locks WHERE locktype = 'advisory' AND granted "
            "AND objsubid = 2 AND classid::bigint = :ns"), {"ns": TURN_NAMESPACE}).scalars())


def test_kill_9_run_is_resumed_by_the_next_run_without_flags(
        engine: Engine, model_id: int, bank: ClipBank, tmp_path: Path) -> None:
    day = dt.date(2024, 5, 7)
    batch_id = _three_pending_calls(engine, model_id, bank, tmp_path, seed=15, day=day)
    # a run that claims two calls and then hangs (mid-scoring), killed with SIGKILL
    script = textwrap.dedent(f"""
        import sys, time
        from db.engine import make_engine, session_scope
        from etl.runs.claims import claim_next
        from etl.runs.leases import Lease
        engine = make_engine({engine.url.render_as_string(hide_password=False)!r})
        lease = Lease(engine, name="doomed").acquire()
        for _ in range(2):
            with session_scope(engine) as session:
                claim_next(session, batch_id={batch_id}, worker=lease.owner)
        print("claimed", flush=True)
        time.sleep(600)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=REPO, stdout=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "claimed"
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM calls WHERE batch_id = :b AND "
                                     "status = 'claimed' AND claimed_by LIKE 'doomed#%'"),
                                {"b": batch_id}).scalar_one() == 2
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    report = _wait_for_release(engine, tmp_path, day)
    calls = _calls(engine, batch_id)
    assert all(c["status"] == "scored" and c["segments"] for c in calls.values()), calls
    assert report.run_scored == 3 and report.n_pending == 0


def _wait_for_release(engine: Engine, path: Path, day: dt.date) -> object:
    """The server notices a SIGKILLed client's socket close at once; allow it a moment."""
    import time

    for _ in range(50):
        with engine.connect() as conn:
            alive = conn.execute(text("SELECT count(*) FROM pg_stat_activity WHERE "
                                      "application_name = '' AND state = 'idle' AND "
                                      "query LIKE '%pg_try_advisory_lock%'")).scalar_one()
        if not alive:
            break
        time.sleep(0.1)
    return score_batch(engine, path, batch_date=day, workers=1, config=CONFIG)


# --------------------------------------------------------------------------------------------
# 5. This run's speed
# --------------------------------------------------------------------------------------------


def test_resumed_run_reports_only_what_it_scored(engine: Engine, model_id: int,
                                                 bank: ClipBank, tmp_path: Path) -> None:
    generate_calls(tmp_path, n_calls=4, minutes=0.15, bank=bank, seed=17)
    day = dt.date(2024, 5, 10)
    first = score_batch(engine, tmp_path, batch_date=day, workers=1, config=CONFIG)
    assert first.run_scored == 4 and first.run_audio_seconds == pytest.approx(first.audio_seconds)
    with engine.begin() as conn:  # as if the first run had been killed after two calls
        redo = conn.execute(text(
            "UPDATE calls SET status = 'pending' WHERE batch_id = :b AND call_key IN "
            "('call_0003', 'call_0004') RETURNING duration_s"), {"b": first.batch_id}).scalars()
        redo_audio = sum(redo)
    resumed = score_batch(engine, tmp_path, batch_date=day, workers=1, config=CONFIG)
    assert (resumed.n_scored, resumed.run_scored) == (4, 2)
    assert resumed.run_audio_seconds == pytest.approx(redo_audio, rel=1e-6)
    assert resumed.audio_seconds == pytest.approx(first.audio_seconds)

    from ser.commands.score import _print_report

    runner_out: list[str] = []
    import typer

    original = typer.echo
    typer.echo = lambda message="", **_kw: runner_out.append(str(message))  # type: ignore[assignment]
    try:
        _print_report(resumed.as_dict())
    finally:
        typer.echo = original  # type: ignore[assignment]
    speed = resumed.run_audio_seconds / resumed.wall_seconds
    assert f"this run scored 2 calls ({redo_audio / 60:.1f} min)" in runner_out[0]
    assert f"{speed:.0f}x real time" in runner_out[0]


# --------------------------------------------------------------------------------------------
# Through the CLI (these truncate the database, so they run after the tests above)
# --------------------------------------------------------------------------------------------


def test_exit_codes_all_scored_some_failed_could_not_run(
        cli_env: dict[str, str], engine: Engine, bank: ClipBank, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    from config import get_settings
    from db.engine import cached_engine
    from ser.cli import app

    with session_scope(engine) as session:
        train_tiny_model(session, bank=bank)
    generate_calls(tmp_path / "b", n_calls=2, minutes=0.15, bank=bank, seed=11)
    runner = CliRunner()
    ok = runner.invoke(app, ["score", str(tmp_path / "b"), "--batch-date", "2024-05-04",
                             "--workers", "1"])
    assert ok.exit_code == 0, ok.output
    (tmp_path / "b" / "broken.wav").write_bytes(b"nope")
    some = runner.invoke(app, ["score", str(tmp_path / "b"), "--batch-date", "2024-05-04",
                               "--workers", "1"])
    assert some.exit_code == 1, some.output
    with engine.connect() as conn:
        assert conn.execute(text("SELECT status FROM calls WHERE call_key = 'broken'")
                            ).scalar_one() == "failed"
    # a server that is not there: one line, names the server, no password
    monkeypatch.setenv("DATABASE_URL", "postgresql+psycopg2://ser:s3cret@127.0.0.1:9/nightly")
    get_settings.cache_clear()
    cached_engine.cache_clear()
    down = runner.invoke(app, ["score", str(tmp_path / "b"), "--workers", "1"])
    assert down.exit_code == 2
    lines = [line for line in down.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), down.output
    assert "ser@127.0.0.1:9/nightly" in lines[0] and "s3cret" not in down.output


def test_three_concurrent_runs_give_identical_segment_counts(
        cli_env: dict[str, str], engine: Engine, bank: ClipBank, tmp_path: Path) -> None:
    with session_scope(engine) as session:
        train_tiny_model(session, bank=bank)
    generate_calls(tmp_path / "b", n_calls=20, minutes=0.1, bank=bank, seed=16)
    env = {**os.environ, **cli_env}
    reference = subprocess.run(
        [sys.executable, "-m", "ser", "score", str(tmp_path / "b"), "--batch-date",
         "2024-05-08", "--workers", "1"], cwd=REPO, env=env, capture_output=True, text=True,
        check=False)
    assert reference.returncode == 0, reference.stderr
    runs = [subprocess.Popen(
        [sys.executable, "-m", "ser", "score", str(tmp_path / "b"), "--batch-date",
         "2024-05-09", "--workers", "1"], cwd=REPO, env=env, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True) for _ in range(3)]
    outputs = [run.communicate(timeout=600) for run in runs]
    assert [run.returncode for run in runs] == [0, 0, 0], outputs
    with engine.connect() as conn:
        rows = conn.execute(text(
            "SELECT b.batch_date, c.call_key, c.status, count(s.id) FROM calls c "
            "JOIN batches b ON b.id = c.batch_id LEFT JOIN call_segments s ON s.call_id = c.id "
            "GROUP BY 1, 2, 3")).all()
    per_day: dict[dt.date, dict[str, int]] = {}
    for day, key, status, n in rows:
        assert status == "scored"
        per_day.setdefault(day, {})[key] = n
    assert len(per_day[dt.date(2024, 5, 8)]) == 20
    assert per_day[dt.date(2024, 5, 9)] == per_day[dt.date(2024, 5, 8)]
    # every call scored by exactly one of the three: the runs' "this run scored" add up to 20
    scored = [int(out.split("this run scored ")[1].split()[0]) for out, _err in outputs]
    assert sum(scored) == 20, scored


# --------------------------------------------------------------------------------------------
# 6. Analysts: limits, logins, passwords
# --------------------------------------------------------------------------------------------


def _role_settings(engine: Engine, role: str) -> dict[str, str]:
    with engine.connect() as conn:
        rows = conn.execute(text(
            "SELECT unnest(s.setconfig) FROM pg_db_role_setting s JOIN pg_roles r ON "
            "r.oid = s.setrole WHERE r.rolname = :r AND s.setdatabase = (SELECT oid FROM "
            "pg_database WHERE datname = current_database())"), {"r": role}).scalars().all()
    return dict(row.split("=", 1) for row in rows)


def test_analyst_limits_and_a_password_login(cli_env: dict[str, str], engine: Engine) -> None:
    from ser.cli import app

    assert _role_settings(engine, "ser_analyst") == {
        "statement_timeout": "5min", "idle_in_transaction_session_timeout": "10min",
        "temp_file_limit": "2GB"}
    name = f"analyst_{uuid.uuid4().hex[:8]}"
    runner = CliRunner()
    try:
        added = runner.invoke(app, ["db", "analyst", "add", name, "--password", "correct-horse"])
        assert added.exit_code == 0, added.output
        with engine.connect() as conn:
            login = conn.execute(text(
                "SELECT r.rolcanlogin, r.rolsuper, pg_has_role(r.oid, 'ser_analyst', 'MEMBER'), "
                "a.rolpassword LIKE 'SCRAM-SHA-256$%' FROM pg_roles r JOIN pg_authid a ON "
                "a.oid = r.oid WHERE r.rolname = :n"), {"n": name}).one()
        assert tuple(login) == (True, False, True, True)
        assert _role_settings(engine, name) == _role_settings(engine, "ser_analyst")
        changed = runner.invoke(app, ["db", "analyst", "limits", "--statement-timeout", "90s"])
        assert changed.exit_code == 0, changed.output
        assert _role_settings(engine, name)["statement_timeout"] == "90s"
        assert _role_settings(engine, "ser_analyst")["statement_timeout"] == "90s"

        url = make_url(engine.url.render_as_string(hide_password=False))
        dsn = {"dbname": url.database, "user": name,
               "host": url.host or url.query.get("host"), "port": url.port or 5432}
        if os.environ.get("TEST_DATABASE_URL") is None:  # the embedded server's pg_hba.conf
            with pytest.raises(psycopg2.OperationalError, match="password"):
                psycopg2.connect(**dsn, password="wrong-password").close()
        conn = psycopg2.connect(**dsn, password="correct-horse")
        try:
            with conn.cursor() as cur:
                cur.execute("SHOW statement_timeout")
                assert cur.fetchone() == ("90s",)
                cur.execute("SELECT count(*) FROM analytics.calls")
        finally:
            conn.close()
    finally:
        runner.invoke(app, ["db", "analyst", "limits", "--statement-timeout", "5min"])
        with engine.begin() as conn:
            conn.execute(text(f'DROP ROLE IF EXISTS "{name}"'))
