"""Conversation metrics (etl/scoring/call_metrics.py) against the call generator's ground truth, their
storage (call_summaries columns, call_events rows), the analytics views and the migration."""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
from collections.abc import Iterator, Mapping, Sequence
from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import Engine, inspect, text

from db.engine import session_scope
from db.migrate import downgrade, upgrade
from db.models import CallSummary
from etl.audio.decode import resample
from etl.audio.vad import FrameAnalyser, Region
from etl.corpora.labels import NEGATIVE_EMOTIONS
from etl.runs.results import write_result
from etl.scoring.call_metrics import (
    ROLES,
    CallMetrics,
    MetricsConfig,
    RoleEnergy,
    Turn,
    compute_call_metrics,
    find_interruptions,
    find_silences,
    find_turns,
    quarter_negative_shares,
    response_latency,
    speaking_rate,
    speech_frames,
    turn_stats,
)
from etl.scoring.config import ScoringConfig
from etl.scoring.recording import score_recording
from etl.scoring.summaries import ScoredSegment
from etl.synthetic.calls import CallGenConfig, compose_call, generate_calls
from etl.synthetic.clips import ClipBank
from etl.synthetic.line import telephone_line
from etl.synthetic.speech import PROSODY, Voice, synthesize
from etl.synthetic.timeline import TimelineEvent, speech_events
from tests.conftest import truncate_all
from tests.utils.nightly import train_tiny_model

SR = 8000
# clean calls (no tones, music or babble) with pauses long enough to hold long silences
# both parties at one level: the interruption counts, not the VAD's reach, are under test
CLEAN = CallGenConfig(nonspeech=0.0, turn_gap_s=(0.3, 3.5), party_level_db=(0.0, 0.0))
SEEDS = range(6)


def _truth_speech(timeline: Sequence[TimelineEvent]) -> dict[str, list[Region]]:
    return {role: [(e.start_s, e.end_s) for e in speech_events(timeline, role=role)]
            for role in ROLES}


def _vad(signal: np.ndarray) -> tuple[dict[str, list[Region]], dict[str, RoleEnergy]]:
    """VAD regions and frame energies per role of a ``(2, n)`` call, as scoring gets them."""
    speech, energy = {}, {}
    for channel, role in enumerate(ROLES):
        analyser = FrameAnalyser(SR)
        analyser.feed(signal[channel])
        speech[role] = analyser.regions()
        energy[role] = RoleEnergy(analyser.energy_db, hop_s=analyser.hop / SR,
                                  frame_s=analyser.frame / SR)
    return speech, energy


def _truth_interruptions(timeline: Sequence[TimelineEvent]) -> list[tuple[str, float, float]]:
    """(interrupting role, start, overlap s): utterances starting inside another role's."""
    utterances = speech_events(timeline)
    out = []
    for e in utterances:
        held = [f for f in utterances if f.role != e.role and f.start_s < e.start_s < f.end_s]
        if held:
            out.append((e.role, e.start_s, min(max(f.end_s for f in held), e.end_s) - e.start_s))
    return out


def _truth_turns(timeline: Sequence[TimelineEvent], *, gap_s: float = 1.0) -> list[Turn]:
    """Turns straight from the generator's utterance order: a new turn when the speaker
    changes or pauses ``gap_s`` or more."""
    turns: list[list] = []
    for e in sorted(speech_events(timeline), key=lambda e: e.start_s):
        last = turns[-1] if turns else None
        if last is not None and last[0] == e.role and e.start_s - last[2] < gap_s:
            last[2] = max(last[2], e.end_s)
        else:
            turns.append([e.role, e.start_s, e.end_s])
    return [Turn(r, s, t) for r, s, t in turns]


def _truth_silences(timeline: Sequence[TimelineEvent], *, duration_s: float,
                    min_s: float) -> list[tuple[float, float]]:
    edges, out, covered = sorted((e.start_s, e.end_s) for e in speech_events(timeline)), [], 0.0
    for start, end in edges:
        if start - covered >= min_s:
            out.append((covered, start))
        covered = max(covered, end)
    if duration_s - covered >= min_s:
        out.append((covered, duration_s))
    return out


# --------------------------------------------------------------------------------------------
# Pure functions on hand-built regions
# --------------------------------------------------------------------------------------------


def test_turns_latency_and_interruptions_on_hand_built_regions() -> None:
    speech = {
        # agent: 0-3, 3.5-5 (one turn), then 9-12 after the customer's answer, 12.5-16 again
        "agent": [(0.0, 3.0), (3.5, 5.0), (9.0, 12.0), (12.5, 16.0)],
        # customer: a 0.2 s "mm" inside the agent's turn, answers at 6 (latency 1 s to ...),
        # and cuts in at 15 for 3 s
        "customer": [(1.0, 1.2), (6.0, 8.5), (15.0, 18.0)],
    }
    turns = find_turns(speech, gap_s=1.0)
    assert [(t.role, t.start_s, t.end_s) for t in turns] == [
        ("agent", 0.0, 5.0), ("customer", 1.0, 1.2), ("customer", 6.0, 8.5),
        ("agent", 9.0, 16.0), ("customer", 15.0, 18.0)]
    # the "mm" is a turn of its own but too short to interrupt; the cut-in at 15 is one
    events = find_interruptions(turns, min_s=0.3)
    assert [(e.role, e.kind, e.start_s, e.end_s, e.value) for e in events] == [
        ("customer", "interruption", 15.0, 16.0, 1.0)]
    assert response_latency(turns) == pytest.approx(0.5)  # customer 8.5 -> agent 9.0
    assert turn_stats(turns, role="agent") == (2, 6.0, 7.0)
    assert turn_stats(turns, role="nobody") == (0, None, None)
    # the customer speaking in the agent's pause ends the agent's turn there
    split = find_turns({"agent": [(0.0, 2.0), (2.8, 4.0)], "customer": [(2.2, 2.5)]})
    assert [(t.role, t.start_s) for t in split] == [("agent", 0.0), ("customer", 2.2),
                                                      ("agent", 2.8)]
    # ... but not when the agent resumes while the customer is still talking: the customer
    # talked over the agent's turn
    over = find_turns({"agent": [(0.0, 2.0), (2.4, 4.0)], "customer": [(2.2, 3.0)]})
    assert [(t.role, t.start_s, t.end_s) for t in over] == [("agent", 0.0, 4.0),
                                                            ("customer", 2.2, 3.0)]
    assert [(e.role, e.start_s, e.value) for e in find_interruptions(over)] == [
        ("customer", 2.2, 0.8)]
    # a pause of gap_s or more ends it too
    assert len(find_turns({"agent": [(0.0, 2.0), (3.0, 4.0)]}, gap_s=1.0)) == 2
    assert len(find_turns({"agent": [(0.0, 2.0), (2.9, 4.0)]}, gap_s=1.0)) == 1


def test_long_silences_include_the_edges_of_the_call() -> None:
    speech = {"agent": [(2.5, 4.0), (10.0, 11.0)], "customer": [(4.5, 7.9), (11.0, 12.0)]}
    events = find_silences(speech, duration_s=15.0, min_s=2.0)
    assert [(e.role, e.kind, e.start_s, e.end_s, e.value) for e in events] == [
        (None, "silence", 0.0, 2.5, 2.5), (None, "silence", 7.9, 10.0, 2.1),
        (None, "silence", 12.0, 15.0, 3.0)]
    assert find_silences({}, duration_s=1.5, min_s=2.0) == []


def _seg(role: str, start: float, end: float, negative: bool, *,
         abstained: bool = False) -> ScoredSegment:
    emotion = "angry" if negative else "calm"
    return ScoredSegment(role, start, end, emotion, 0.9, negative and not abstained,
                         {emotion: 0.9}, abstained=abstained)


def test_negative_share_per_quarter_and_role() -> None:
    # 40 s call: quarters 0-10, 10-20, 20-30, 30-40
    segments = [
        _seg("customer", 0.0, 4.0, False), _seg("customer", 5.0, 7.0, True),
        _seg("customer", 8.0, 12.0, True),  # 2 s in q1, 2 s in q2
        _seg("customer", 31.0, 35.0, True),
        _seg("customer", 36.0, 40.0, False, abstained=True),  # abstained: not counted
        _seg("agent", 22.0, 26.0, False),
    ]
    q = quarter_negative_shares(segments, duration_s=40.0)
    assert q["negative_share_customer_q1"] == pytest.approx(4 / 8)
    assert q["negative_share_customer_q2"] == pytest.approx(1.0)
    assert q["negative_share_customer_q3"] is None
    assert q["negative_share_customer_q4"] == pytest.approx(1.0)
    assert q["negative_share_agent_q3"] == 0.0
    assert [q[f"negative_share_agent_q{k}"] for k in (1, 2, 4)] == [None, None, None]


# --------------------------------------------------------------------------------------------
# Against the generator's truth
# --------------------------------------------------------------------------------------------


def test_interruptions_turns_and_latency_exact_on_truth_regions(bank: ClipBank) -> None:
    seen = 0
    for seed in SEEDS:
        _, timeline, *_ = compose_call(bank, duration_s=120.0, seed=seed, config=CLEAN)
        turns = find_turns(_truth_speech(timeline))
        truth = _truth_turns(timeline)
        assert [(t.role, t.start_s, t.end_s) for t in turns] == [
            (t.role, t.start_s, t.end_s) for t in truth], seed
        expected = _truth_interruptions(timeline)
        events = find_interruptions(turns)
        assert [(e.role, e.start_s) for e in events] == [(r, s) for r, s, _ in expected]
        assert [e.value for e in events] == pytest.approx([o for *_, o in expected], abs=2e-3)
        gaps = [b.start_s - a.end_s for a, b in pairwise(truth)
                if (a.role, b.role) == ("customer", "agent") and b.start_s > a.end_s]
        assert response_latency(turns) == pytest.approx(np.mean(gaps), abs=1e-3)
        seen += len(expected)
    assert seen >= 5  # the seeds do hold interruptions


def test_interruption_count_exact_on_vad_of_clean_calls(bank: ClipBank) -> None:
    for seed in SEEDS:
        signal, timeline, *_ = compose_call(bank, duration_s=120.0, seed=seed, config=CLEAN)
        speech, energy = _vad(telephone_line(signal, SR, seed=seed))
        metrics, events = compute_call_metrics([], speech=speech, energy=energy,
                                               duration_s=signal.shape[1] / SR)
        truth = _truth_interruptions(timeline)
        found = [e for e in events if e.kind == "interruption"]
        assert [e.role for e in found] == [r for r, *_ in truth], seed
        # onsets to a frame or two; the VAD's hangover lengthens each overlap a little
        assert [e.start_s for e in found] == pytest.approx([s for _, s, _ in truth], abs=0.05)
        assert metrics.interruptions_by_agent == sum(r == "agent" for r, *_ in truth)
        assert metrics.interruptions_by_customer == sum(r == "customer" for r, *_ in truth)
        assert metrics.interruption_overlap_s == pytest.approx(
            sum(o for *_, o in truth), abs=0.2 * max(len(truth), 1))


def test_long_silences_within_0_2_s_of_truth(bank: ClipBank) -> None:
    matched = 0
    for seed in SEEDS:
        signal, timeline, *_ = compose_call(bank, duration_s=120.0, seed=seed, config=CLEAN)
        duration = signal.shape[1] / SR
        exact = find_silences(_truth_speech(timeline), duration_s=duration, min_s=2.0)
        truth = _truth_silences(timeline, duration_s=duration, min_s=2.0)
        assert [x for e in exact for x in (e.start_s, e.end_s)] == pytest.approx(
            [x for pair in truth for x in pair], abs=1e-3)
        speech, _ = _vad(telephone_line(signal, SR, seed=seed))
        found = [(e.start_s, e.end_s) for e in find_silences(speech, duration_s=duration)]
        # stretches clearly over (under) 2 s must (must not) be found; each within 0.2 s
        for start, end in _truth_silences(timeline, duration_s=duration, min_s=2.3):
            assert any(abs(s - start) <= 0.2 and abs(e - end) <= 0.2 for s, e in found), \
                (seed, start, end)
            matched += 1
        loose = _truth_silences(timeline, duration_s=duration, min_s=1.7)
        for s, e in found:
            assert any(abs(s - a) <= 0.2 and abs(e - b) <= 0.2 for a, b in loose), (seed, s, e)
    assert matched >= 20


def _call_with_customer_gain(bank: ClipBank, *, seed: int,
                             gain_db: float) -> tuple[CallMetrics, list, float]:
    """A calm clean call whose customer channel gets ``gain_db`` from the middle on."""
    signal, *_ = compose_call(bank, duration_s=90.0, seed=seed, scenario="calm", config=CLEAN)
    half = signal.shape[1] // 2
    signal = signal.copy()
    # the quieter half is lowered instead of the louder raised: the relative step is the same
    # and nothing clips
    if gain_db >= 0:
        signal[1, :half] *= 10 ** (-gain_db / 20.0)
    else:
        signal[1, half:] *= 10 ** (gain_db / 20.0)
    speech, energy = _vad(telephone_line(signal, SR, seed=seed))
    metrics, events = compute_call_metrics([], speech=speech, energy=energy,
                                           duration_s=signal.shape[1] / SR)
    return metrics, events, signal.shape[1] / SR


@pytest.mark.parametrize("seed", [1, 4])
def test_loudness_change_follows_the_customer_gain(bank: ClipBank, seed: int) -> None:
    flat, *_ = _call_with_customer_gain(bank, seed=seed, gain_db=0.0)
    louder, events, duration = _call_with_customer_gain(bank, seed=seed, gain_db=10.0)
    quieter, *_ = _call_with_customer_gain(bank, seed=seed, gain_db=-10.0)
    assert flat.loudness_change_customer_db is not None
    assert louder.loudness_change_customer_db > 4.0
    assert quieter.loudness_change_customer_db < -4.0
    assert louder.loudness_change_customer_db - flat.loudness_change_customer_db == \
        pytest.approx(10.0, abs=2.0)
    # the agent's channel is untouched
    assert louder.loudness_change_agent_db == pytest.approx(flat.loudness_change_agent_db,
                                                            abs=0.5)
    assert -40.0 < louder.loudness_agent_dbfs < -10.0
    # per turn too: the customer's turns after the middle are louder
    levels = [(e.start_s, e.value) for e in events if e.kind == "turn" and e.role == "customer"]
    early = [v for s, v in levels if s < duration / 2 - 2]
    late = [v for s, v in levels if s > duration / 2 + 2]
    assert early and late and np.mean(late) - np.mean(early) > 6.0


def _rate(emotion: str, actor: int) -> float | None:
    # synthesised at 16 kHz and resampled, as the generator's clip bank does
    signal = resample(synthesize(emotion, voice=Voice.for_actor(actor), seed=actor,
                                 duration_s=6.0, sr=16000), 16000, SR)
    analyser = FrameAnalyser(SR)
    analyser.feed(telephone_line(signal, SR, seed=actor))
    energy = RoleEnergy(analyser.energy_db, hop_s=analyser.hop / SR, frame_s=analyser.frame / SR)
    return speaking_rate(energy, speech_frames(energy, analyser.regions()))


def test_speaking_rate_proxy_tracks_the_syllable_rate() -> None:
    """The synthetic voices have a known syllable rate (2.7/s sad, 5.8/s fearful, +-8 %)."""
    for emotion in ("sad", "fearful"):
        for actor in (1, 2):
            rate = _rate(emotion, actor)
            assert rate == pytest.approx(PROSODY[emotion].syllables_per_s, rel=0.2), emotion
    assert _rate("fearful", 3) > 1.5 * _rate("sad", 3)  # type: ignore[operator]
    silent = RoleEnergy(np.full(100, -90.0, np.float32), hop_s=0.02, frame_s=0.032)
    assert speaking_rate(silent, np.zeros(100, bool)) is None


def test_metrics_mirror_the_summary_columns_and_mono_calls(bank: ClipBank) -> None:
    fields = {f.name for f in dataclasses.fields(CallMetrics)}
    assert fields <= set(CallSummary.__table__.columns.keys())
    signal, timeline, *_ = compose_call(bank, duration_s=60.0, seed=2, config=CLEAN)
    speech, energy = _vad(telephone_line(signal, SR, seed=2))
    segments = [_seg(e.role, e.start_s, e.end_s, e.emotion in NEGATIVE_EMOTIONS)
                for e in speech_events(timeline)]
    metrics, events = compute_call_metrics(segments, speech=speech, energy=energy,
                                           duration_s=60.0)
    assert metrics.turns_agent == sum(e.kind == "turn" and e.role == "agent" for e in events)
    assert metrics.long_silence_count == sum(e.kind == "silence" for e in events)
    assert [e.start_s for e in events] == sorted(e.start_s for e in events)
    assert metrics.negative_share_agent_q1 == 0.0  # the generator's agents are never negative
    # a mono call: the customer only
    mono, _ = compute_call_metrics(
        [s for s in segments if s.role == "customer"], speech={"customer": speech["customer"]},
        energy={"customer": energy["customer"]}, duration_s=60.0)
    assert (mono.turns_agent, mono.loudness_agent_dbfs, mono.speaking_rate_agent) == (0, None,
                                                                                      None)
    assert mono.negative_share_agent_q1 is None and mono.agent_response_latency_s is None
    assert mono.turns_customer > 0 and mono.loudness_customer_dbfs is not None
    with pytest.raises(ValueError, match="positive"):
        MetricsConfig(turn_gap_s=0.0)


# --------------------------------------------------------------------------------------------
# Scoring, storage and the analytics views
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model_id(engine: Engine) -> Iterator[int]:
    truncate_all(engine)
    with session_scope(engine) as session:
        version_id = train_tiny_model(session)
    yield version_id
    truncate_all(engine)


def _rows(engine: Engine, sql: str, **params: object) -> list:
    with engine.connect() as conn:
        return list(conn.execute(text(sql), params).mappings().all())


def _documented_metric_queries() -> list[str]:
    doc = (Path(__file__).resolve().parent.parent / "docs" / "analytics.md").read_text()
    section = doc.split("## Conversation metrics", 1)[1]
    return re.findall(r"```sql\n(.*?)```", section, flags=re.DOTALL)


def test_scoring_stores_metrics_and_events(engine: Engine, model_id: int, bank: ClipBank,
                                           tmp_path: Path) -> None:
    from etl.runs.batch import score_batch
    from etl.training.loading import load_model

    config = ScoringConfig(max_duration_s=120.0)
    calls = generate_calls(tmp_path, n_calls=1, minutes=1.0, bank=bank, seed=17, config=CLEAN)
    report = score_batch(engine, tmp_path, batch_date=dt.date(2024, 4, 1), workers=1,
                         config=config)
    assert report.n_scored == 1
    # the documented queries read a window of recent days: the call took place today
    with engine.begin() as conn:
        conn.execute(text("UPDATE calls SET started_at = now() WHERE batch_id = :b"),
                     {"b": report.batch_id})
    with session_scope(engine) as session:
        model = load_model(session, str(model_id))
    result = score_recording(calls[0].path, model=model, config=config)
    metrics = result.metrics.as_dict()
    assert "metrics" in result.seconds  # their cost is measured by bench/nightly.py
    summary = _rows(engine, "SELECT * FROM analytics.calls WHERE call_key = 'call_0001' "
                            "AND batch_id = :b", b=report.batch_id)[0]
    assert {k: summary[k] for k in metrics} == pytest.approx(metrics)
    assert summary["turns_agent"] > 0 and summary["loudness_customer_dbfs"] is not None
    events = _rows(engine, "SELECT role, kind, start_s, end_s, value FROM analytics.call_events "
                           "WHERE call_id = :c ORDER BY event_id", c=summary["call_id"])
    assert [tuple(e.values()) for e in events] == [
        (e.role, e.kind, e.start_s, e.end_s, e.value) for e in result.events]
    kinds = {e["kind"] for e in events}
    assert {"turn", "silence"} <= kinds
    assert sum(e["kind"] == "interruption" for e in events) == (
        summary["interruptions_by_agent"] + summary["interruptions_by_customer"])

    # each documented question's query runs as the analyst and finds this call (only the
    # 10 s dead-air query may come back empty: the generated pauses are shorter)
    answered = []
    for sql in _documented_metric_queries():
        with engine.connect() as conn, conn.begin():
            conn.execute(text("SET LOCAL ROLE ser_analyst"))
            answered.append(bool(conn.execute(text(sql)).all()))
    assert len(answered) >= 6 and sum(answered) >= len(answered) - 1, (answered, summary)

    # a rescore of the call by the same model replaces its events
    with engine.begin() as conn:
        conn.execute(text("UPDATE calls SET status = 'claimed', claimed_by = 'again' "
                          "WHERE id = :c"), {"c": summary["call_id"]})
    with session_scope(engine) as session:
        assert write_result(session, call_id=summary["call_id"], worker="again",
                            model_version_id=model_id, result=result)
    again = _rows(engine, "SELECT count(*) AS n FROM call_events WHERE call_id = :c",
                  c=summary["call_id"])
    assert again[0]["n"] == len(result.events)


def test_analyst_reads_call_events_and_the_appended_columns(engine: Engine) -> None:
    with engine.connect() as conn:
        columns = [r[0] for r in conn.execute(text(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = "
            "'analytics' AND table_name = 'calls' ORDER BY ordinal_position"))]
        rights = dict(conn.execute(text(
            "SELECT p, has_table_privilege('ser_analyst', 'analytics.call_events', p) FROM "
            "unnest(ARRAY['SELECT', 'INSERT', 'UPDATE', 'DELETE']) p")).all())
        table = conn.execute(text(
            "SELECT has_table_privilege('ser_analyst', 'public.call_events', 'SELECT')"
        )).scalar_one()
    metric_columns = [f.name for f in dataclasses.fields(CallMetrics)]
    assert columns[-len(metric_columns):] == metric_columns
    # the columns analysts had keep their places
    assert columns[:3] == ["call_id", "call_key", "batch_id"]
    assert columns.index("escalation_rules_source") == len(columns) - len(metric_columns) - 1
    assert rights == {"SELECT": True, "INSERT": False, "UPDATE": False, "DELETE": False}
    assert table is False


# --------------------------------------------------------------------------------------------
# Migration: downgrade restores the previous schema exactly
# --------------------------------------------------------------------------------------------



def _schema(engine: Engine) -> Mapping[str, object]:
    with engine.connect() as conn:
        views = conn.execute(text(
            "SELECT c.relname, pg_get_viewdef(c.oid), obj_description(c.oid, 'pg_class'), "
            "has_table_privilege('ser_analyst', c.oid, 'SELECT') FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'analytics' "
            "ORDER BY 1")).all()
    insp = inspect(engine)
    return {"views": [tuple(v) for v in views], "tables": sorted(insp.get_table_names()),
            "summary": [c["name"] for c in insp.get_columns("call_summaries")]}


def test_downgrade_restores_the_previous_schema(scratch_engine: Engine) -> None:
    upgrade(scratch_engine, "b3a7e2c9d5f4")
    before = _schema(scratch_engine)
    upgrade(scratch_engine)
    after = _schema(scratch_engine)
    assert "call_events" in after["tables"] and after != before
    downgrade(scratch_engine, "b3a7e2c9d5f4")
    assert _schema(scratch_engine) == before
