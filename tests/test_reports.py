"""Reports: escaping, self-containment, content that matches the database, the CLI, speed."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import pandas as pd
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from db.engine import session_scope
from etl.synthetic import history as f
from reports import build, charts, queries
from reports.render import render
from ser.cli import app

DAY = dt.date(2026, 3, 14)
HOSTILE = "<script>alert(1)</script>.wav"
ESCAPED = "&lt;script&gt;alert(1)&lt;/script&gt;.wav"


@pytest.fixture()
def world(db_session: Session) -> dict[str, object]:
    """Two model versions (one in production), 10 nights of history and tonight's batch."""
    s = db_session
    clips = f.make_corpus(s, n_actors=10, seed=1)
    fs = f.make_feature_set(s)
    prod = f.make_model_version(s, clip_ids=clips, feature_set_id=fs, skill=0.5, seed=2)
    f.promote(s, prod)
    new = f.make_model_version(s, clip_ids=clips, feature_set_id=fs, skill=0.8, seed=3)
    f.make_history(s, model_version_id=prod, last_date=DAY, days=10, n_calls=10)
    batch = f.make_batch(s, model_version_id=prod, batch_date=DAY, n_calls=60, seed=4,
                         failure_rate=0.1, call_names=[HOSTILE])
    return {"prod": prod, "new": new, "batch": batch, "clips": clips}


def _assert_self_contained(html: str) -> None:
    assert html.startswith("<!DOCTYPE html>")
    # Nothing is fetched: no external src/href, no stylesheet link, no CSS import or url().
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", html, re.IGNORECASE)
    assert not re.search(r"<link\b|@import|url\(", html, re.IGNORECASE)
    assert "<script" not in html.lower()  # charts need no JavaScript; a hostile name stays text
    assert "http://www.w3.org/2000/svg" in html or "<svg" not in html  # namespace only


def test_render_autoescapes_everything_from_data() -> None:
    ctx = {"kind": "index", "title": HOSTILE, "subtitle": "<b>x</b>", "meta": {"kind": "index"},
           "generated_at": dt.datetime(2026, 1, 1), "root": "",
           "groups": {"batch": [{"href": "batch-x.html", "title": "<img src=x onerror=1>",
                                 "summary": "a & b", "size_kb": 1.0,
                                 "modified": dt.datetime(2026, 1, 1)}], "model": [], "call": []}}
    html = render("index.html.j2", ctx)
    assert ESCAPED in html and HOSTILE not in html
    assert "&lt;img src=x onerror=1&gt;" in html and "<img" not in html
    assert "&lt;b&gt;x&lt;/b&gt;" in html
    assert render("index.html.j2", ctx) == html  # pure: same input, same output


def test_charts_escape_labels_and_draw_marks() -> None:
    svg = str(charts.hbar_chart([(HOSTILE, 0.5), ("b", -0.2)], axis_label="<u>pp</u>"))
    assert "<script" not in svg and "&lt;script&gt;" in svg and "&lt;u&gt;pp&lt;/u&gt;" in svg
    assert svg.count("<rect") >= 2
    heat = str(charts.heatmap([[3, 1], [0, 4]], ["a", "<b>"], ["a", "<b>"]))
    assert "&lt;b&gt;" in heat and "75%" in heat and "100%" in heat
    line = str(charts.line_chart([charts.Series("s", [0, 1, 2], [0.1, None, 0.3], markers=True)],
                                 x_label="x", y_label="y"))
    assert "<circle" in line
    # each point's hover title names its own values, also after a gap
    titles = re.findall(r"<circle[^>]*><title>([^<]*)</title>", line)
    assert [t.split(": ")[1] for t in titles] == ["0 → 0.1", "2 → 0.3"]
    assert charts.nice_ticks(0, 1, 5) == [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]


def test_batch_report_escapes_file_names_and_is_self_contained(world: dict[str, object],
                                                               db_session: Session,
                                                               tmp_path: Path) -> None:
    path = build.batch_report(db_session, DAY, tmp_path)
    html = path.read_text()
    _assert_self_contained(html)
    assert ESCAPED in html and HOSTILE not in html
    assert html.count("<svg") >= 4  # mix, trend, movers, sparklines
    calls = queries.batch_calls(db_session, [world["batch"].batch_id])  # type: ignore[attr-defined]
    escalated = calls[calls["escalated"].astype(bool)]
    assert len(escalated) > 0
    for call_id in escalated["id"]:  # every escalation links to its own section
        assert f'href="#call-{call_id}"' in html and f'id="call-{call_id}"' in html
    for rule in set(escalated["escalation_rule"]):
        assert rule in html
    failed = calls[calls["status"] == "failed"]
    assert len(failed) > 0 and all(str(e) in html for e in set(failed["error"]))


def test_batch_numbers_match_the_database(world: dict[str, object], db_session: Session) -> None:
    ctx = build.batch_context(db_session, DAY)
    row = db_session.execute(text(
        "SELECT n_scored, n_failed, n_escalations FROM batches WHERE batch_date = :d"),
        {"d": DAY}).one()
    assert (ctx["n_scored"], ctx["n_failed"], ctx["n_escalated"]) == tuple(row)
    ranked = [e["longest_negative_streak_s"] for e in ctx["escalations"]]
    assert ranked == sorted(ranked, reverse=True)
    trend = {r["label"]: r for r in ctx["trend_rows"]}
    assert trend["calls"]["today"] == 60 and trend["calls"]["base7"] == 10
    assert trend["calls"]["n30"] == 10  # ten nights of history, all inside the 30-night window
    shares = dict(ctx["mix_rows"][0])
    assert shares["role"] == "customer"
    assert abs(sum(v for k, v in shares.items() if k != "role") - 1.0) < 1e-6
    assert ctx["queues"]["has_history"] and ctx["queues"]["rows"]


def test_first_night_without_history(db_session: Session, tmp_path: Path) -> None:
    clips = f.make_corpus(db_session, n_actors=6, seed=9)
    mv = f.make_model_version(db_session, clip_ids=clips, feature_set_id=f.make_feature_set(
        db_session), with_metrics=False)
    f.make_batch(db_session, model_version_id=mv, batch_date=DAY, n_calls=15, seed=1)
    html = build.batch_report(db_session, DAY, tmp_path).read_text()
    assert "No earlier nights" in html and "No history yet" in html
    # A model with no metric rows still gets a readable report.
    model_html = build.model_report(db_session, mv, tmp_path).read_text()
    assert "training stored no confusion matrix" in model_html
    assert "No model is promoted to production yet" in model_html


def test_model_report_shows_speaker_independent_scores_and_comparison(
        world: dict[str, object], db_session: Session, tmp_path: Path) -> None:
    new = int(world["new"])  # type: ignore[call-overload]
    ctx = build.model_context(db_session, new)
    folds = db_session.execute(text(
        "SELECT value FROM model_metrics WHERE model_version_id = :m AND metric = 'uar' "
        "AND fold IS NOT NULL AND group_name IS NULL"), {"m": new}).scalars().all()
    assert ctx["head"]["uar"]["mean"] == pytest.approx(sum(folds) / len(folds))
    assert ctx["head"]["uar"]["std"] == pytest.approx(pd.Series(folds).std())
    assert ctx["comparison"] is not None and not ctx["is_production"]
    delta = ctx["comparison"]["rows"][0]["delta"]
    assert delta is not None and delta > 0  # the new model (skill 0.8) beats production (0.5)
    assert {g["name"] for g in ctx["groups"]} == {"sex", "age band", "race"}
    html = build.model_report(db_session, new, tmp_path).read_text()
    _assert_self_contained(html)
    assert "speaker-independent" in html and "ROC curves" in html and "mfcc" in html
    assert html.count("<svg") >= 8
    prod_html = build.model_report(db_session, int(world["prod"]), tmp_path).read_text()  # type: ignore[call-overload]
    assert "<strong>is</strong> the current production model" in prod_html


def test_model_report_reads_the_training_part_layout(db_session: Session) -> None:
    """uar_mean/uar_std rows and permutation importances (etl/training/train.py's layout) are used."""
    clips = f.make_corpus(db_session, n_actors=6, seed=5)
    mv = f.make_model_version(db_session, clip_ids=clips,
                              feature_set_id=f.make_feature_set(db_session), seed=5)
    db_session.execute(text(
        "INSERT INTO model_metrics (model_version_id, metric, value, extra) VALUES "
        "(:m, 'uar_mean', 0.6543, NULL), (:m, 'uar_std', 0.0321, NULL), "
        "(:m, 'diagnostic_random_split_uar', 0.91, NULL)"), {"m": mv})
    db_session.execute(text(
        "UPDATE model_metrics SET group_name = 'feature', group_value = extra->>'feature', "
        "extra = extra || '{\"method\": \"permutation_uar_drop_heldout\"}' "
        "WHERE model_version_id = :m AND metric = 'feature_importance'"), {"m": mv})
    ctx = build.model_context(db_session, mv)
    assert ctx["head"]["uar"]["mean"] == pytest.approx(0.6543)
    assert ctx["head"]["uar"]["std"] == pytest.approx(0.0321)
    assert ctx["random_split_uar"] == pytest.approx(0.91)
    assert "drop in UAR" in str(ctx["importance_chart"])
    assert {g["name"] for g in ctx["groups"]} == {"sex", "age band", "race"}  # not "feature"


def test_call_report_timeline(world: dict[str, object], db_session: Session,
                              tmp_path: Path) -> None:
    ids = world["batch"].call_ids  # type: ignore[attr-defined]
    hostile_id = ids[0]
    status = db_session.execute(text("SELECT status FROM calls WHERE id = :i"),
                                {"i": hostile_id}).scalar_one()
    html = build.call_report(db_session, hostile_id, tmp_path).read_text()
    _assert_self_contained(html)
    assert ESCAPED in html and HOSTILE not in html
    assert ("Not scored" in html) == (status == "failed")
    esc_id = db_session.execute(text(
        "SELECT call_id FROM call_summaries WHERE escalated AND call_id = ANY(:i) "
        "ORDER BY longest_negative_streak_s DESC LIMIT 1"), {"i": ids}).scalar_one()
    path = build.call_report(db_session, esc_id, tmp_path)
    html = path.read_text()
    assert path.name == f"call-{esc_id}.html" and path.parent.name == "calls"
    assert "⚑ customer_" in html and "customer talk" in html and "overtalk" in html
    assert 'href="../index.html"' in html and f'href="../batch-{DAY.isoformat()}.html"' in html
    n_segments = db_session.execute(text("SELECT count(*) FROM call_segments WHERE call_id = :i"),
                                    {"i": esc_id}).scalar_one()
    assert html.count("<g><title>") == n_segments  # one probability column per segment


def test_escalation_window_follows_the_rule_metric() -> None:
    segs = pd.DataFrame([
        {"role": "customer", "start_s": 0.0, "end_s": 4.0, "emotion": "calm", "is_negative": False},
        {"role": "customer", "start_s": 10.0, "end_s": 14.0, "emotion": "angry", "is_negative": True},
        {"role": "customer", "start_s": 14.5, "end_s": 18.0, "emotion": "sad", "is_negative": True},
        {"role": "customer", "start_s": 30.0, "end_s": 33.0, "emotion": "angry", "is_negative": True},
        {"role": "agent", "start_s": 17.0, "end_s": 20.0, "emotion": "calm", "is_negative": False},
    ])
    options = {"rules": [{"name": "streaky", "metric": "longest_negative_streak_s"},
                         {"name": "trendy", "metric": "customer_trend"},
                         {"name": "talkover", "metric": "overtalk_share"}], "streak_gap_s": 2.0}
    call = {"escalated": True, "duration_s": 60.0}
    neg = {"angry", "sad"}
    assert build.escalation_window({**call, "escalation_rule": "streaky"}, segs, neg,
                                   options) == (10.0, 18.0)
    assert build.escalation_window({**call, "escalation_rule": "trendy"}, segs, neg,
                                   options) == (40.0, 60.0)
    assert build.escalation_window({**call, "escalation_rule": "talkover"}, segs, neg,
                                   options) == (17.0, 18.0)
    assert build.escalation_window({**call, "escalated": False}, segs, neg, options) is None
    stored = {**call, "escalation_rule": "x", "extra": {"escalation": {"start_s": 5, "end_s": 9}}}
    assert build.escalation_window(stored, segs, neg, options) == (5.0, 9.0)


def test_index_lists_every_report(world: dict[str, object], db_session: Session,
                                  tmp_path: Path) -> None:
    written = build.build_all(db_session, tmp_path)
    html = (tmp_path / "index.html").read_text()
    _assert_self_contained(html)
    reports = [p for kind in ("model", "batch", "call") for p in written[kind]]
    assert len(written["model"]) == 2 and len(written["batch"]) == 11
    assert written["call"], "escalated calls get their own reports"
    hrefs = set(re.findall(r'href="([^"#]+)"', html))
    for path in reports:
        assert path.relative_to(tmp_path).as_posix() in hrefs
    assert all((tmp_path / h).exists() for h in hrefs)
    # The batch report links each escalated call's full timeline, which exists.
    batch_html = (tmp_path / build.batch_file(DAY)).read_text()
    links = re.findall(r'href="(calls/call-\d+\.html)"', batch_html)
    assert links and all((tmp_path / link).exists() for link in links)
    # index_report(session, out_dir) (the interfaces' form) is the same thing.
    assert build.index_report(db_session, tmp_path).read_text().count("<tr") == html.count("<tr")


def test_unknown_things_raise_actionable_errors(world: dict[str, object],
                                                db_session: Session, tmp_path: Path) -> None:
    with pytest.raises(queries.ReportNotFoundError, match="Known: callcentre:1"):
        queries.resolve_model(db_session, "nope")
    assert queries.resolve_model(db_session, "production") == world["prod"]
    assert queries.resolve_model(db_session, "callcentre:2") == world["new"]
    with pytest.raises(queries.ReportNotFoundError, match=DAY.isoformat()):
        build.batch_report(db_session, dt.date(1999, 1, 1), tmp_path)
    with pytest.raises(queries.ReportNotFoundError, match="no call"):
        queries.resolve_call(db_session, "999999999")
    assert queries.resolve_call(db_session, HOSTILE) == world["batch"].call_ids[0]  # type: ignore[attr-defined]


def test_cli_writes_reports_and_index(cli_env: dict[str, str], tmp_path: Path) -> None:
    engine = create_engine(cli_env["DATABASE_URL"])
    with session_scope(engine) as s:
        clips = f.make_corpus(s, n_actors=6, seed=2)
        mv = f.make_model_version(s, clip_ids=clips, feature_set_id=f.make_feature_set(s))
        f.promote(s, mv)
        batch = f.make_batch(s, model_version_id=mv, batch_date=DAY, n_calls=20, seed=3)
    engine.dispose()
    out = tmp_path / "out"
    runner = CliRunner()
    for args in (["model", "production"], ["batch", "latest"], ["call", str(batch.call_ids[1])],
                 ["index"]):
        result = runner.invoke(app, ["report", *args, "--out", str(out)])
        assert result.exit_code == 0, result.output
    assert (out / "index.html").exists() and (out / build.batch_file(DAY)).exists()
    assert (out / build.model_file("callcentre", 1)).exists()
    assert (out / build.call_file(batch.call_ids[1])).exists()
    bad = runner.invoke(app, ["report", "batch", "2001-01-01", "--out", str(out)])
    assert bad.exit_code == 2 and "no batch on 2001-01-01" in bad.output
    bad = runner.invoke(app, ["report", "batch", "yesterday", "--out", str(out)])
    assert bad.exit_code == 2 and "not a date" in bad.output


def test_thousand_call_batch_lists_every_call_and_stays_small(db_session: Session,
                                                              tmp_path: Path) -> None:
    """Its render time is measured by bench/reports.py, not asserted here (a timed test fails
    on a busy machine, not on slow code)."""
    clips = f.make_corpus(db_session, n_actors=6, seed=8)
    mv = f.make_model_version(db_session, clip_ids=clips,
                              feature_set_id=f.make_feature_set(db_session), with_metrics=False)
    f.make_history(db_session, model_version_id=mv, last_date=DAY, days=7, n_calls=5)
    f.make_batch(db_session, model_version_id=mv, batch_date=DAY, n_calls=1000, seed=11,
                 min_duration_s=60, max_duration_s=240)
    path = build.batch_report(db_session, DAY, tmp_path)
    size = path.stat().st_size
    html = path.read_text()
    assert html.count("<tr") > 1000  # every call is listed
    assert size < 3 * 2**20, f"1,000-call batch report is {size / 2**20:.1f} MB"


# --------------------------------------------------------------------------------------------
# Conversation metrics in the reports (quarters, interruptions, dead air)
# --------------------------------------------------------------------------------------------


def _add_conversation(session: Session, batch_id: int) -> dict[str, tuple[int, float]]:
    """Give the batch's scored calls conversation metrics and events, as scoring stores them:
    agent ``i`` (in agent order) interrupts ``i`` times per call and leaves ``10 * i`` s of dead
    air. Returns agent -> (interruptions per call, dead air per call)."""
    calls = session.execute(text(
        "SELECT c.id, c.agent_id, s.model_version_id, s.duration_s FROM calls c "
        "JOIN call_summaries s ON s.call_id = c.id WHERE c.batch_id = :b ORDER BY c.id"),
        {"b": batch_id}).all()
    agents = sorted({c.agent_id for c in calls})
    per_agent = {a: (i % 4, 10.0 * (3 - i % 4)) for i, a in enumerate(agents)}
    for c in calls:
        n_int, dead = per_agent[c.agent_id]
        session.execute(text(
            "UPDATE call_summaries SET interruptions_by_agent = :n, interruptions_by_customer = 1,"
            " interruption_overlap_s = :n * 0.5, long_silence_count = 1, long_silence_s = :d, "
            "long_silence_longest_s = :d, turns_agent = 5, negative_share_customer_q1 = 0.1, "
            "negative_share_customer_q4 = 0.9, negative_share_agent_q2 = 0.25 "
            "WHERE call_id = :c"), {"n": n_int, "d": dead, "c": c.id})
        rows = [{"c": c.id, "m": c.model_version_id, "r": "agent", "k": "interruption",
                 "s": 20.0 + k, "e": 20.5 + k, "v": 0.5} for k in range(n_int)]
        rows.append({"c": c.id, "m": c.model_version_id, "r": None, "k": "silence", "s": 5.0,
                     "e": 5.0 + dead, "v": dead})
        session.execute(text("INSERT INTO call_events (call_id, model_version_id, role, kind, "
                             "start_s, end_s, value) VALUES (:c, :m, :r, :k, :s, :e, :v)"), rows)
    return per_agent


def test_batch_report_ranks_agents_by_interruptions_and_dead_air(
        world: dict[str, object], db_session: Session, tmp_path: Path) -> None:
    batch_id = world["batch"].batch_id  # type: ignore[attr-defined]
    html = build.batch_report(db_session, DAY, tmp_path).read_text()
    assert "Agents: interruptions and dead air" in html and "--recompute-summaries" in html
    per_agent = _add_conversation(db_session, batch_id)
    ctx = build.batch_context(db_session, DAY)
    ranked = ctx["agent_conversation"]["by_interruptions"]
    assert [r["interruptions_per_call"] for r in ranked] == sorted(
        (float(v[0]) for v in per_agent.values()), reverse=True)[:len(ranked)]
    assert ranked[0]["interruptions_per_call"] == 3.0
    dead = ctx["agent_conversation"]["by_dead_air"]
    assert dead[0]["dead_air_per_call_s"] == 30.0 and dead[-1]["dead_air_per_call_s"] >= 0.0
    assert ctx["agent_conversation"]["n_agents"] == len(per_agent)
    html = build.batch_report(db_session, DAY, tmp_path).read_text()
    _assert_self_contained(html)
    section = html.split('id="agent-conversation"', 1)[1].split("</section>", 1)[0]
    assert "Interruptions by the agent" in section and "Dead air" in section
    assert "--recompute-summaries" not in section
    assert section.index(ranked[0]["agent_id"]) < section.index(ranked[-1]["agent_id"])


def test_call_report_marks_quarters_interruptions_and_silences(
        world: dict[str, object], db_session: Session, tmp_path: Path) -> None:
    batch_id = world["batch"].batch_id  # type: ignore[attr-defined]
    per_agent = _add_conversation(db_session, batch_id)
    call = db_session.execute(text(
        "SELECT c.id, c.agent_id FROM calls c JOIN call_summaries s ON s.call_id = c.id "
        "WHERE c.batch_id = :b AND s.interruptions_by_agent = 3 ORDER BY c.id LIMIT 1"),
        {"b": batch_id}).one()
    html = build.call_report(db_session, call.id, tmp_path).read_text()
    _assert_self_contained(html)
    assert html.count("Q1 neg. 10%") == 1 and "Q4 neg. 90%" in html  # the customer's band
    assert "Q2 neg. 25%" in html and "Q3 –" in html  # the agent's; no share in Q3
    assert html.count("agent interrupts at 0:2") == 3 and "interruptions" in html
    dead = per_agent[call.agent_id][1]
    assert f"silence 0:05–{charts.mmss(5.0 + dead)} ({dead:.1f} s)" in html
    assert "long silence" in html and "by the agent 3 · by the customer 1" in html
    assert "3 interruptions and 1 long silence<" in html
    # a call scored before the metrics existed says how to fill them in
    other = db_session.execute(text(
        "SELECT c.id FROM calls c JOIN call_summaries s ON s.call_id = c.id WHERE s.call_id "
        "<> :c AND c.status = 'scored' ORDER BY c.id LIMIT 1"), {"c": call.id}).scalar_one()
    db_session.execute(text("UPDATE call_summaries SET interruptions_by_agent = NULL WHERE "
                            "call_id = :c"), {"c": other})
    assert "--recompute-summaries" in build.call_report(db_session, other, tmp_path).read_text()


def _escalated_call(session: Session, ids: list[int]) -> int:
    return int(session.execute(text(
        "SELECT call_id FROM call_summaries WHERE escalated AND call_id = ANY(:i) "
        "ORDER BY longest_negative_streak_s DESC LIMIT 1"), {"i": ids}).scalar_one())


def test_call_report_plays_the_recording_from_the_flagged_stretches(
        world: dict[str, object], db_session: Session, tmp_path: Path) -> None:
    """An <audio> element on the call's own file, one media fragment per flagged stretch
    starting at the escalation window, the customer's channel named, no JavaScript."""
    import numpy as np
    import soundfile as sf

    from reports.contexts.escalation import escalation_window

    ids = world["batch"].call_ids  # type: ignore[attr-defined]
    esc_id = _escalated_call(db_session, ids)
    wav = tmp_path / "audio" / "call one.wav"
    wav.parent.mkdir()
    sf.write(wav, np.zeros((8000 * 400, 2), dtype=np.float32), 8000)
    db_session.execute(text("UPDATE calls SET path = :p, channel_roles = '{\"0\": \"agent\", "
                            "\"1\": \"customer\"}' WHERE id = :i"), {"p": str(wav), "i": esc_id})
    html = build.call_report(db_session, esc_id, tmp_path / "out").read_text()
    _assert_self_contained(html)
    src = wav.as_uri()
    assert "%20" in src and f'<audio controls preload="metadata" src="{src}">' in html
    call = queries.call_detail(db_session, esc_id)
    segs = queries.call_segments(db_session, esc_id, int(call["model_version_id"]))
    negative = queries.negative_classes(db_session, call["label_scheme"])
    window = escalation_window(call, segs, negative, call.get("batch_options"))
    assert window is not None
    first = f"#t={window[0]:.1f},{window[1]:.1f}"
    fragments = re.findall(r'<a class="stretch" href="([^"]+)"', html)
    assert fragments and fragments[0] == src + first
    assert all(re.fullmatch(re.escape(src) + r"#t=\d+\.\d,\d+\.\d", f) for f in fragments)
    assert f'<audio controls preload="none" src="{src}{first}">' in html
    assert "The customer is on the right channel (1); the agent on the left channel (0)" in html
    assert "not reachable" not in html and "data:audio" not in html  # excerpts are opt-in
    # a report that travels: the flagged stretch rides along as a short WAV
    html = build.call_report(db_session, esc_id, tmp_path / "out",
                             embed_excerpt=True).read_text()
    excerpt = re.search(r'<audio class="excerpt" controls preload="none" '
                        r'src="data:audio/wav;base64,([A-Za-z0-9+/=]+)"', html)
    assert excerpt is not None
    import base64
    import io

    audio, sr = sf.read(io.BytesIO(base64.b64decode(excerpt.group(1))))
    assert sr == 8000 and audio.shape[1] == 2
    assert len(audio) == pytest.approx(8000 * min(window[1] - window[0], 30.0), abs=8000 * 0.2)


def test_call_report_says_plainly_when_the_recording_is_unreachable(
        world: dict[str, object], db_session: Session, tmp_path: Path) -> None:
    ids = world["batch"].call_ids  # type: ignore[attr-defined]
    esc_id = _escalated_call(db_session, ids)
    html = build.call_report(db_session, esc_id, tmp_path, embed_excerpt=True).read_text()
    path = db_session.execute(text("SELECT path FROM calls WHERE id = :i"),
                              {"i": esc_id}).scalar_one()
    assert "Recording not reachable" in html and path in html
    assert "data:audio" not in html


def test_batch_report_links_every_escalation_to_its_call_report(
        world: dict[str, object], db_session: Session, tmp_path: Path) -> None:
    """As `ser report batch` and `ser report all` write them (escalated calls' reports first)."""
    build.build_all(db_session, tmp_path, calls="escalated")
    html = (tmp_path / build.batch_file(DAY)).read_text()
    ids = world["batch"].call_ids  # type: ignore[attr-defined]
    escalated = db_session.execute(text(
        "SELECT call_id FROM call_summaries WHERE escalated AND call_id = ANY(:i)"),
        {"i": ids}).scalars().all()
    links = set(re.findall(r'<a class="call-report" href="calls/call-(\d+)\.html"', html))
    assert links == {str(i) for i in escalated} and escalated
    assert all((tmp_path / "calls" / f"call-{i}.html").exists() for i in escalated)
