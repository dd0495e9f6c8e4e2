"""Nightly scoring: summaries math, escalation rules, discovery, failure isolation, idempotent and
resumable reruns, concurrent claims, a second model version, the CLI and the deployment."""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from sqlalchemy import Engine, text
from typer.testing import CliRunner

from db.engine import session_scope
from etl.runs.batch import run_worker, score_batch
from etl.runs.claims import claim_next
from etl.runs.inbox import discover_calls
from etl.runs.registration import register_batch
from etl.runs.results import write_result
from etl.scoring.config import ScoringConfig
from etl.scoring.escalation import EscalationRule, evaluate, load_rules
from etl.scoring.recording import score_recording
from etl.scoring.summaries import ScoredSegment, summarise_call
from etl.synthetic.calls import generate_calls
from etl.synthetic.clips import ClipBank
from tests.conftest import truncate_all
from tests.utils.nightly import train_tiny_model

DAY = dt.date(2024, 3, 1)
CONFIG = ScoringConfig(max_duration_s=45.0)  # generated calls are ~24 s; "too long" is 50 s


# --------------------------------------------------------------------------------------------
# Pure functions
# --------------------------------------------------------------------------------------------


def _seg(role: str, start: float, end: float, emotion: str, negative: bool) -> ScoredSegment:
    return ScoredSegment(role, start, end, emotion, 0.9, negative, {emotion: 0.9})


def test_summary_math_on_hand_built_segments() -> None:
    segments = [
        _seg("agent", 0.0, 4.0, "calm", False),
        _seg("customer", 5.0, 9.0, "calm", False),  # first third (0-20 s): 4 s calm
        _seg("customer", 9.0, 11.0, "angry", True),  # first third: 2 s angry
        _seg("customer", 40.0, 44.0, "angry", True),  # last third (40-60 s)
        _seg("customer", 45.0, 49.0, "sad", True),  # 1 s gap: same streak (40-49 = 9 s)
        _seg("customer", 52.0, 54.0, "calm", False),
        _seg("agent", 50.0, 53.0, "angry", True),
    ]
    speech = {"agent": [(0.0, 4.5), (50.0, 53.0)],
              "customer": [(4.0, 11.0), (40.0, 49.0), (52.0, 54.0)]}
    s = summarise_call(segments, speech=speech, duration_s=60.0)
    assert s.talk_agent_s == pytest.approx(7.5)
    assert s.talk_customer_s == pytest.approx(18.0)
    # anyone speaking: 0-11, 40-49, 50-54 = 24 s; both: 4-4.5 and 52-53 = 1.5 s
    assert s.silence_share == pytest.approx(1 - 24 / 60, abs=1e-4)
    assert s.overtalk_share == pytest.approx(1.5 / 60, abs=1e-4)
    assert s.negative_share_customer == pytest.approx(10 / 16, abs=1e-4)
    assert s.negative_share_agent == pytest.approx(3 / 7, abs=1e-4)
    assert s.longest_negative_streak_s == pytest.approx(9.0)
    assert s.customer_negative_first_third == pytest.approx(2 / 6, abs=1e-4)
    assert s.customer_negative_last_third == pytest.approx(8 / 10, abs=1e-4)
    assert s.customer_trend == pytest.approx(8 / 10 - 2 / 6, abs=1e-3)
    assert s.emotion_mix["customer"] == {"angry": 0.375, "calm": 0.375, "sad": 0.25}
    assert s.emotion_mix["agent"] == pytest.approx({"angry": 3 / 7, "calm": 4 / 7}, abs=1e-4)
    fired = evaluate(s)
    assert fired is not None and fired.rule == "customer_negative_share"
    assert "customer_worsening" not in fired.rule and "customer_trend" in fired.reason


def test_summary_without_customer_speech() -> None:
    s = summarise_call([_seg("agent", 0.0, 2.0, "calm", False)],
                       speech={"agent": [(0.0, 2.0)]}, duration_s=10.0)
    assert s.negative_share_customer is None and s.customer_trend is None
    assert s.longest_negative_streak_s == 0.0
    assert evaluate(s) is None


def test_escalation_rules_from_toml_json_and_env(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    toml = tmp_path / "rules.toml"
    toml.write_text('[[rules]]\nname = "long_silence"\nmetric = "silence_share"\n'
                    'op = ">"\nthreshold = 0.8\n')
    rules = load_rules(toml)
    assert rules == (EscalationRule("long_silence", "silence_share", 0.8, ">"),)
    inline = '[{"name": "x", "metric": "overtalk_share", "threshold": 0.1}]'
    assert load_rules(inline)[0].metric == "overtalk_share"
    # the environment is read at the edges (config.Settings.rules), never here
    monkeypatch.setenv("SER_RULES", inline)
    monkeypatch.setenv("SER_ESCALATION_RULES", inline)
    assert load_rules() is None  # not configured: the model's operating point applies
    with pytest.raises(ValueError, match="unknown metric"):
        load_rules('[{"name": "y", "metric": "mood", "threshold": 1}]')
    with pytest.raises(ValueError, match="does not exist"):
        load_rules(tmp_path / "missing.json")


def test_discover_reads_calls_csv_roles_and_unlisted_files(tmp_path: Path) -> None:
    day = tmp_path / "2024-03-02"
    day.mkdir()
    (day / "a.wav").write_bytes(b"x")
    (day / "b.flac").write_bytes(b"x")
    (tmp_path / "loose.ogg").write_bytes(b"x")
    with (day / "calls.csv").open("w", newline="") as handle:
        w = csv.writer(handle)
        w.writerow(["call_id", "file", "agent_id", "queue", "started_at", "customer_channel"])
        w.writerow(["C1", "a.wav", "A7", "billing", "2024-03-02T10:00:00", "left"])
        w.writerow(["C2", "gone.wav", "", "", "", ""])
    entries = {e.call_key: e for e in discover_calls(tmp_path)}
    assert set(entries) == {"2024-03-02/C1", "2024-03-02/C2", "2024-03-02/b", "loose"}
    c1 = entries["2024-03-02/C1"]
    assert c1.channel_roles == {"0": "customer", "1": "agent"}
    assert (c1.agent_id, c1.queue) == ("A7", "billing")
    assert c1.started_at == dt.datetime(2024, 3, 2, 10, tzinfo=dt.UTC)
    assert entries["2024-03-02/C2"].path.name == "gone.wav"  # kept: it fails with a reason
    with pytest.raises(ValueError, match="does not exist"):
        discover_calls(tmp_path / "nope")


# --------------------------------------------------------------------------------------------
# Database
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model_id(engine: Engine) -> Iterator[int]:
    truncate_all(engine)
    with session_scope(engine) as session:
        version_id = train_tiny_model(session)
    yield version_id
    truncate_all(engine)


@pytest.fixture(scope="module")
def batch_dir(tmp_path_factory: pytest.TempPathFactory, bank: ClipBank) -> Path:
    """3 good calls, plus a corrupt, an empty, a silent, a noise-only and a too-long file."""
    root = tmp_path_factory.mktemp("batch")
    generate_calls(root, n_calls=3, minutes=0.4, bank=bank, seed=5)
    (root / "corrupt.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunkjunkjunk" * 10)
    (root / "empty.wav").write_bytes(b"")
    sf.write(str(root / "silent.wav"), np.zeros((8000 * 5, 2), np.float32), 8000)
    noise = (0.01 * np.random.default_rng(0).standard_normal((8000 * 5, 2))).astype(np.float32)
    sf.write(str(root / "noise.wav"), noise, 8000)
    sf.write(str(root / "long.wav"), np.zeros((8000 * 50, 2), np.float32), 8000)
    return root


def _statuses(engine: Engine, batch_id: int) -> dict[str, tuple[str, str | None]]:
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT call_key, status, error FROM calls WHERE batch_id = :b"),
                            {"b": batch_id}).all()
    return {r.call_key: (r.status, r.error) for r in rows}


def _count(engine: Engine, sql: str, **params: object) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text(sql), params).scalar_one())


def test_failure_isolation_and_idempotent_rerun(engine: Engine, model_id: int,
                                                batch_dir: Path) -> None:
    report = score_batch(engine, batch_dir, batch_date=DAY, model_ref="production", workers=1,
                         config=CONFIG)
    assert (report.n_calls, report.n_scored, report.n_failed, report.n_pending) == (8, 3, 5, 0)
    status = _statuses(engine, report.batch_id)
    assert all(status[f"call_000{i}"][0] == "scored" for i in (1, 2, 3))
    assert "empty" in status["empty"][1]
    assert "readable" in status["corrupt"][1] or "decode" in status["corrupt"][1]
    assert "silent" in status["silent"][1]
    assert "no speech" in status["noise"][1]
    assert "limit" in status["long"][1]
    assert set(report.failures) == {"corrupt", "empty", "silent", "noise", "long"}
    segments = _count(engine, "SELECT count(*) FROM call_segments s JOIN calls c ON c.id = "
                      "s.call_id WHERE c.batch_id = :b AND s.model_version_id = :m",
                      b=report.batch_id, m=model_id)
    assert segments > 10
    with engine.connect() as conn:
        summaries = conn.execute(text(
            "SELECT s.* FROM call_summaries s JOIN calls c ON c.id = s.call_id "
            "WHERE c.batch_id = :b"), {"b": report.batch_id}).mappings().all()
        batch = conn.execute(text("SELECT * FROM batches WHERE id = :b"),
                             {"b": report.batch_id}).mappings().one()
        meta = conn.execute(text("SELECT agent_id, queue, started_at, channel_roles, extra "
                                 "FROM calls WHERE call_key = 'call_0001'")).mappings().one()
    assert len(summaries) == 3 and all(s["model_version_id"] == model_id for s in summaries)
    assert all(0 < s["talk_customer_s"] < s["duration_s"] for s in summaries)
    assert (batch["status"], batch["n_failed"], batch["n_scored"]) == ("done", 5, 3)
    assert batch["n_escalations"] == sum(s["escalated"] for s in summaries)
    assert meta["agent_id"] and meta["queue"] and meta["started_at"] is not None
    assert meta["channel_roles"] == {"0": "agent", "1": "customer"}
    assert meta["extra"]["bandwidth"] == "narrowband" and meta["extra"]["warnings"] == []

    again = score_batch(engine, batch_dir, batch_date=DAY, model_ref="production", workers=1,
                        config=CONFIG)
    assert again.batch_id == report.batch_id
    assert (again.n_calls, again.n_scored, again.n_failed) == (8, 3, 5)
    assert _count(engine, "SELECT count(*) FROM call_segments") == segments
    assert _count(engine, "SELECT count(*) FROM batches") == 1


def test_killed_run_resumes_and_fresh_claims_are_respected(engine: Engine, model_id: int,
                                                           bank: ClipBank,
                                                           tmp_path: Path) -> None:
    generate_calls(tmp_path, n_calls=4, minutes=0.2, bank=bank, seed=9)
    day = dt.date(2024, 3, 2)
    with session_scope(engine) as session:
        batch_id = register_batch(session, source_path=str(tmp_path), batch_date=day,
                                  model_version_id=model_id, entries=discover_calls(tmp_path))
    with session_scope(engine) as session:
        model = __import__("etl.training.loading", fromlist=["load_model"]).load_model(session)
    stats = run_worker(engine, batch_id=batch_id, model=model, config=CONFIG, max_calls=1)
    assert len(stats.scored) == 1
    # a worker that died holding a claim (stale) and one that is alive (fresh claim)
    with engine.begin() as conn:
        conn.execute(text("UPDATE calls SET status = 'claimed', claimed_by = 'dead', claimed_at "
                          "= now() - interval '2 hours' WHERE batch_id = :b AND call_key = "
                          "'call_0002'"), {"b": batch_id})
        conn.execute(text("UPDATE calls SET status = 'claimed', claimed_by = 'alive', claimed_at "
                          "= now() WHERE batch_id = :b AND call_key = 'call_0003'"),
                     {"b": batch_id})
    report = score_batch(engine, tmp_path, batch_date=day, workers=1, config=CONFIG)
    assert report.batch_id == batch_id
    assert (report.n_scored, report.n_pending) == (3, 1)
    status = _statuses(engine, batch_id)
    assert status["call_0002"][0] == "scored" and status["call_0003"][0] == "claimed"
    with engine.connect() as conn:
        assert conn.execute(text("SELECT status FROM batches WHERE id = :b"),
                            {"b": batch_id}).scalar_one() == "partial"
    # the live worker lost nothing; a worker whose claim was taken over cannot write
    with session_scope(engine) as session:
        claimed = claim_next(session, batch_id=batch_id, worker="late", stale_after_s=0.0)
    assert claimed is not None and claimed.call_key == "call_0003"
    result = score_recording(claimed.path, model=model, config=CONFIG)
    with session_scope(engine) as session:
        assert not write_result(session, call_id=claimed.id, worker="alive",
                                model_version_id=model_id, result=result)
    with session_scope(engine) as session:
        assert write_result(session, call_id=claimed.id, worker="late",
                            model_version_id=model_id, result=result)


def test_failed_and_rejected_outcomes_need_the_claim(engine: Engine, model_id: int,
                                                     tmp_path: Path) -> None:
    """A failure or a rejection is written only by the claim's holder; a rejection keeps what
    registration stored in ``extra`` and is never claimed again, not even to retry it."""
    from etl.runs.inbox_entry import CallEntry
    from etl.runs.results import write_outcome

    with session_scope(engine) as session:
        batch_id = register_batch(
            session, source_path=str(tmp_path), batch_date=dt.date(2024, 3, 5),
            model_version_id=model_id, entries=[
                CallEntry("bad", tmp_path / "bad.wav", extra={"site": "north"}, line=2),
                CallEntry("moved", tmp_path / "moved.wav", extra={"site": "south"}, line=3)])
    with session_scope(engine) as session:
        bad = claim_next(session, batch_id=batch_id, worker="w")
        moved = claim_next(session, batch_id=batch_id, worker="w")
    assert bad is not None and moved is not None
    for status, call in (("failed", bad), ("rejected", moved)):
        with session_scope(engine) as session:
            assert not write_outcome(session, call_id=call.id, worker="other",
                                     model_version_id=model_id, status=status, reason="no")
        assert _statuses(engine, batch_id)[call.call_key] == ("claimed", None)
        with session_scope(engine) as session:
            assert write_outcome(session, call_id=call.id, worker="w",
                                 model_version_id=model_id, status=status, reason="x" * 3000)
    with engine.connect() as conn:
        rows = {r.call_key: r for r in conn.execute(text(
            "SELECT call_key, status, error, extra FROM calls WHERE batch_id = :b"),
            {"b": batch_id})}
    assert {k: (r.status, len(r.error)) for k, r in rows.items()} == {
        "bad": ("failed", 2000), "moved": ("failed", 2000)}
    assert rows["bad"].extra == {"site": "north", "manifest_line": 2}
    assert rows["moved"].extra == {"site": "south", "manifest_line": 3, "rejected": True}
    with session_scope(engine) as session:
        retry = claim_next(session, batch_id=batch_id, worker="w2",
                           retry_failed_before=dt.datetime.now(dt.UTC) + dt.timedelta(hours=1))
    assert retry is not None and retry.call_key == "bad"


@pytest.mark.parametrize("module", ["recording", "config", "audio_passes"])
def test_scoring_a_recording_uses_no_database(module: str) -> None:
    """etl.scoring.recording (with its settings and audio passes) is pure compute; the runners
    in etl/runs write its results."""
    import ast
    import importlib

    source = importlib.import_module(f"etl.scoring.{module}").__file__
    assert source is not None
    tree = ast.parse(Path(source).read_text())
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert not {m for m in imported if m.split(".")[0] in ("sqlalchemy", "psycopg2", "db")}


def test_two_concurrent_workers_never_double_score(engine: Engine, model_id: int, bank: ClipBank,
                                                   tmp_path: Path) -> None:
    generate_calls(tmp_path, n_calls=6, minutes=0.15, bank=bank, seed=13)
    day = dt.date(2024, 3, 3)
    with session_scope(engine) as session:
        batch_id = register_batch(session, source_path=str(tmp_path), batch_date=day,
                                  model_version_id=model_id, entries=discover_calls(tmp_path))
        from etl.training.loading import load_model

        model = load_model(session, str(model_id))
    results: dict[str, object] = {}
    barrier = threading.Barrier(2)

    def work(name: str) -> None:
        barrier.wait()
        results[name] = run_worker(engine, batch_id=batch_id, model=model, config=CONFIG,
                                   worker=name)

    threads = [threading.Thread(target=work, args=(n,)) for n in ("w1", "w2")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    w1, w2 = results["w1"], results["w2"]
    done1, done2 = set(w1.scored), set(w2.scored)  # type: ignore[attr-defined]
    assert not done1 & done2
    assert len(done1 | done2) == 6
    assert done1 and done2  # both took part
    assert not w1.lost and not w2.lost  # type: ignore[attr-defined]
    with engine.connect() as conn:
        per_call = conn.execute(text(
            "SELECT c.claimed_by, count(DISTINCT s.start_s) = count(*) FROM calls c JOIN "
            "call_segments s ON s.call_id = c.id WHERE c.batch_id = :b GROUP BY c.id, "
            "c.claimed_by"), {"b": batch_id}).all()
    assert len(per_call) == 6 and all(unique for _, unique in per_call)
    assert {who.split("#")[0] for who, _ in per_call} == {"w1", "w2"}  # name#lease-key


def test_process_pool_and_new_model_version_keep_results_apart(engine: Engine, model_id: int,
                                                               batch_dir: Path,
                                                               bank: ClipBank) -> None:
    with session_scope(engine) as session:
        second = train_tiny_model(session, bank=bank, speaker_normalisation=False, alias=None,
                                  name="tiny-calls-b")
    report = score_batch(engine, batch_dir, batch_date=DAY, model_ref=str(second), workers=2,
                         config=CONFIG)
    assert (report.n_scored, report.n_failed) == (3, 5)
    assert report.model_version_id == second
    with engine.connect() as conn:
        rows = conn.execute(text(
            "SELECT b.model_version_id, count(DISTINCT b.id), count(s.*) FROM batches b "
            "JOIN calls c ON c.batch_id = b.id JOIN call_segments s ON s.call_id = c.id "
            "AND s.model_version_id = b.model_version_id WHERE b.source_path = :p "
            "GROUP BY 1 ORDER BY 1"), {"p": str(batch_dir.resolve())}).all()
    assert [r[0] for r in rows] == [model_id, second]
    assert all(r[1] == 1 and r[2] > 10 for r in rows)


def test_studio_model_on_phone_audio_fails_unless_allowed(engine: Engine, model_id: int,
                                                          batch_dir: Path) -> None:
    from etl.features.extraction import feature_spec
    from etl.scoring.audio_passes import CallError
    from etl.training.loading import load_model

    with session_scope(engine) as session:
        model = load_model(session, str(model_id))
    studio = dataclasses.replace(model, feature_spec=feature_spec("rich", "studio"))
    with pytest.raises(CallError, match="narrowband .* studio-trained .* telephony model"):
        score_recording(batch_dir / "call_0001.wav", model=studio, config=CONFIG)
    allowed = dataclasses.replace(CONFIG, allow_channel_mismatch=True)
    result = score_recording(batch_dir / "call_0001.wav", model=studio, config=allowed)
    assert result.bandwidth == "narrowband"
    assert result.warnings and "studio" in result.warnings[0]
    assert result.segments and {s.role for s in result.segments} == {"agent", "customer"}


def test_batch_bandwidth_from_headers(batch_dir: Path, tmp_path: Path) -> None:
    from etl.runs.batch import batch_bandwidth

    wide = tmp_path / "wide.wav"
    sf.write(wide, np.zeros(16000, dtype=np.float32), 16000)
    assert batch_bandwidth([tmp_path / "missing.wav", wide]) == "wideband"
    assert batch_bandwidth([wide, *sorted(batch_dir.glob("*.wav"))]) == "narrowband"


def test_block_processing_matches_one_block(engine: Engine, model_id: int,
                                            batch_dir: Path) -> None:
    """Long recordings are read in blocks with context; results match a single pass."""
    from etl.training.loading import load_model

    with session_scope(engine) as session:
        model = load_model(session, str(model_id))
    path = batch_dir / "call_0002.wav"
    whole = score_recording(path, model=model, config=CONFIG)
    blocks = score_recording(path, model=model,
                             config=dataclasses.replace(CONFIG, block_s=5.0))
    assert whole.speech == blocks.speech
    assert [(s.role, s.start_s, s.end_s) for s in whole.segments] == \
        [(s.role, s.start_s, s.end_s) for s in blocks.segments]
    agree = np.mean([a.emotion == b.emotion for a, b in
                     zip(whole.segments, blocks.segments, strict=True)])
    assert agree >= 0.9
    assert whole.summary.talk_customer_s == blocks.summary.talk_customer_s


def test_nightly_inbox_skips_recordings_already_scored(engine: Engine, model_id: int,
                                                       bank: ClipBank, tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    generate_calls(inbox / "2024-03-04", n_calls=2, minutes=0.15, bank=bank, seed=21)
    first = score_batch(engine, inbox, batch_date=dt.date(2024, 3, 4), workers=1, config=CONFIG,
                        skip_done_elsewhere=True)
    assert first.n_scored == 2
    generate_calls(inbox / "2024-03-05", n_calls=1, minutes=0.15, bank=bank, seed=22)
    second = score_batch(engine, inbox, batch_date=dt.date(2024, 3, 5), workers=1, config=CONFIG,
                         skip_done_elsewhere=True)
    assert second.batch_id != first.batch_id
    assert (second.n_calls, second.n_scored) == (1, 1)
    assert _statuses(engine, second.batch_id).keys() == {"2024-03-05/call_0001"}


def test_cli_score_and_deployment(cli_env: dict[str, str], engine: Engine, bank: ClipBank,
                                  tmp_path: Path) -> None:
    from ser.cli import app

    with session_scope(engine) as session:
        train_tiny_model(session, bank=bank)
    generate_calls(tmp_path / "b", n_calls=2, minutes=0.15, bank=bank, seed=31)
    (tmp_path / "b" / "broken.wav").write_bytes(b"nope")
    runner = CliRunner()
    result = runner.invoke(app, ["score", str(tmp_path / "b"), "--batch-date", "2024-03-06",
                                 "--workers", "1"])
    assert result.exit_code == 1, result.output  # some calls failed
    assert "3 calls, 2 scored, 1 failed" in result.output
    assert "failed broken:" in result.output
    as_json = runner.invoke(app, ["score", str(tmp_path / "b"), "--batch-date", "2024-03-06",
                                  "--workers", "1", "--json"])
    assert json.loads(as_json.output)["n_scored"] == 2
    # a claim left by a version without leases (no '#key') a minute ago: aged out only by
    # the hidden --stale-minutes (claims with leases: tests/test_batch_boundaries.py)
    with engine.begin() as conn:
        conn.execute(text("UPDATE calls SET status = 'claimed', claimed_by = 'killed', "
                          "claimed_at = now() - interval '1 minute' WHERE call_key = 'call_0001'"))
    held = runner.invoke(app, ["score", str(tmp_path / "b"), "--batch-date", "2024-03-06",
                               "--workers", "1"])
    assert "1 calls are being scored by another run" in held.output
    taken = runner.invoke(app, ["score", str(tmp_path / "b"), "--batch-date", "2024-03-06",
                                "--workers", "1", "--stale-minutes", "0"])
    assert "2 scored, 1 failed" in taken.output and "another run" not in taken.output
    missing = runner.invoke(app, ["score", str(tmp_path / "b"), "--model", "nope:9"])
    assert missing.exit_code == 2 and "no model version matches" in missing.output
    bad_date = runner.invoke(app, ["score", str(tmp_path / "b"), "--batch-date", "yesterday"])
    assert bad_date.exit_code == 2

    from flows.nightly import nightly_flow
    from flows.schedule import build_deployment

    deployment = build_deployment(cron="30 1 * * *", inbox=str(tmp_path / "inbox"))
    assert deployment.name == "nightly-scoring"
    assert deployment.flow_name == nightly_flow.name
    assert deployment.schedules[0].schedule.cron == "30 1 * * *"
    assert deployment.parameters["inbox"] == str((tmp_path / "inbox").resolve())
    default = build_deployment()
    assert default.schedules[0].schedule.cron == "0 2 * * *"


def test_nightly_flow_runs_under_prefect(cli_env: dict[str, str], engine: Engine, bank: ClipBank,
                                         tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from prefect.testing.utilities import prefect_test_harness

    from flows.nightly import nightly_flow

    monkeypatch.setenv("PREFECT_LOGGING_LEVEL", "WARNING")
    with session_scope(engine) as session:
        train_tiny_model(session, bank=bank)
    inbox = tmp_path / "inbox"
    monkeypatch.setenv("SER_INBOX", str(inbox))  # a run may score only the configured inbox
    from config import get_settings

    get_settings.cache_clear()
    generate_calls(inbox / "today", n_calls=1, minutes=0.15, bank=bank, seed=41)
    (inbox / "today" / "zero.wav").write_bytes(b"")
    delivered = time.time() - 3600  # delivered before the run: settled, not watched
    for path in (inbox / "today").iterdir():
        os.utime(path, (delivered, delivered))
    with prefect_test_harness(server_startup_timeout=120):
        state = nightly_flow(inbox=str(inbox), workers=1, return_state=True)
        report = state.result(raise_on_failure=False)
    assert state.is_failed()  # a call failed: the flow says so
    assert (report["n_calls"], report["n_scored"], report["n_failed"]) == (2, 1, 1)
    assert report["batch_date"] == dt.date.today().isoformat()
    assert report["source_path"] == str(inbox.resolve())
