"""Supervisors' reviews (issue 27): storage and history, the ser_reviewer role, the review queue's
sampling probabilities, the weighted estimates on a population with known truth, calibration
choosing and storing a site point, and nightly scoring using it."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from db.engine import session_scope
from etl.reviews import (
    CalibrationError,
    Verdict,
    calibrate,
    draw_queue,
    estimate_point,
    record_reviews,
    revert,
    site_summary,
    split_budget,
    wilson_interval,
)
from etl.reviews.estimates import reviewed_calls
from etl.reviews.queue import queue_calls
from etl.scoring.escalation import rules_as_data
from etl.scoring.point_in_use import point_in_use, site_point_record
from etl.scoring.rollup import prune_segments
from etl.synthetic import history as f
from ser.cli import app

DAY = dt.date(2026, 4, 1)
NIGHTS = [DAY + dt.timedelta(days=k) for k in range(3)]
# The reviewers' truth in these tests: a customer negative for at least 40 % of their speech
# should be escalated (the stored rules escalate at other numbers).
TRUTH_SHARE = 0.4


def _set_model_point(session: Session, model_version_id: int) -> None:
    """Give the model the history factory's rules as its operating point, so the point in use
    is the one the stored escalations were decided with."""
    rules = [{k: v for k, v in r.items() if k != "description"} for r in f.RULES]
    session.execute(text("""
        UPDATE model_versions SET params = params || jsonb_build_object('calibration',
            jsonb_build_object('operating_point',
                jsonb_build_object('rules', CAST(:r AS jsonb), 'confidence_floor', 0,
                                   'precision', 0.59, 'recall', 0.7, 'n_calls', 100)))
        WHERE id = :m"""), {"r": json.dumps(rules), "m": model_version_id})


@pytest.fixture()
def site(db_session: Session) -> dict[str, object]:
    """A model version with its operating point and three nights of scored calls."""
    fs = f.make_feature_set(db_session)
    mv = f.make_model_version(db_session, clip_ids=[], feature_set_id=fs, with_metrics=False)
    _set_model_point(db_session, mv)
    calls = []
    for k, day in enumerate(NIGHTS):
        calls += f.make_batch(db_session, model_version_id=mv, batch_date=day, n_calls=60,
                              seed=10 + k, failure_rate=0.0, mood=0.3).call_ids
    return {"mv": mv, "calls": calls}


def _population(session: Session, mv: int) -> dict[int, tuple[bool, bool]]:
    """call id -> (escalated, should escalate by the test's truth)."""
    rows = session.execute(text("""
        SELECT s.call_id, s.escalated, coalesce(s.negative_share_customer >= :t, false) AS truth
        FROM call_summaries s WHERE s.model_version_id = :m"""), {"m": mv, "t": TRUTH_SHARE})
    return {int(r.call_id): (bool(r.escalated), bool(r.truth)) for r in rows}


def _judge_all(session: Session, mv: int, call_ids: list[int]) -> list[int]:
    """Reviews from an oracle that knows the truth: 'right' when the decision matches it."""
    pop = _population(session, mv)
    return record_reviews(session, [Verdict(c, "right" if pop[c][0] == pop[c][1] else "wrong")
                                    for c in call_ids], reviewed_by="oracle")


# --------------------------------------------------------------------------------------------
# Storage and history
# --------------------------------------------------------------------------------------------


def test_a_review_copies_the_call_and_rejudging_keeps_history(db_session: Session,
                                                               site: dict[str, object]) -> None:
    s, mv = db_session, int(site["mv"])  # type: ignore[call-overload]
    call = int(site["calls"][0])  # type: ignore[index]
    first, = record_reviews(s, [Verdict(call, "wrong", "angry", "shouting at 1:10")],
                            reviewed_by="ana")
    second, = record_reviews(s, [Verdict(call, "right")], reviewed_by="ben")
    rows = s.execute(text("SELECT * FROM analytics.reviews WHERE call_id = :c ORDER BY "
                          "review_id"), {"c": call}).mappings().all()
    assert [r["review_id"] for r in rows] == [first, second]
    assert [r["is_latest"] for r in rows] == [False, True]
    assert [r["reviewed_by"] for r in rows] == ["ana", "ben"]
    assert rows[0]["customer_emotion"] == "angry" and rows[0]["note"] == "shouting at 1:10"
    expected = s.execute(text("""
        SELECT c.call_key, c.sha256, b.batch_date, s.escalated, s.escalation_rule
        FROM calls c JOIN batches b ON b.id = c.batch_id
        JOIN call_summaries s ON s.call_id = c.id WHERE c.id = :c"""), {"c": call}).one()
    r = rows[0]
    assert (r["call_key"], r["call_sha256"], r["batch_date"], r["escalated"],
            r["escalation_rule"]) == tuple(expected)
    assert r["model_version_id"] == mv and r["should_escalate"] == (not expected.escalated)
    assert rows[1]["should_escalate"] == expected.escalated
    assert r["reviewed_at"] is not None and r["db_user"]


def test_bad_verdicts_and_unknown_calls_are_refused(db_session: Session,
                                                     site: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="right or wrong"):
        Verdict(1, "maybe")
    with pytest.raises(ValueError, match="no scored call with id 999999"):
        record_reviews(db_session, [Verdict(999999, "right")], reviewed_by="ana")
    assert db_session.execute(text("SELECT count(*) FROM call_reviews")).scalar_one() == 0


def test_reviews_survive_prune_rescoring_and_a_new_model_version(
        db_session: Session, site: dict[str, object]) -> None:
    s, mv = db_session, int(site["mv"])  # type: ignore[call-overload]
    call = int(site["calls"][0])  # type: ignore[index]
    review, = record_reviews(s, [Verdict(call, "wrong")], reviewed_by="ana")
    prune_segments(s, before=NIGHTS[-1] + dt.timedelta(days=1))
    s.execute(text("UPDATE call_summaries SET escalated = NOT escalated WHERE call_id = :c"),
              {"c": call})  # a rescore that changed its mind
    fs = f.make_feature_set(s)
    newer = f.make_model_version(s, clip_ids=[], feature_set_id=fs, with_metrics=False, seed=5)
    again = f.make_batch(s, model_version_id=newer, batch_date=NIGHTS[0], n_calls=60, seed=10,
                         failure_rate=0.0, mood=0.3)
    row = s.execute(text("SELECT * FROM analytics.reviews WHERE review_id = :r"),
                    {"r": review}).mappings().one()
    assert row["call_id"] == call and row["model_version_id"] == mv and row["is_latest"]
    # the same recording scored by the new version finds the verdict by its hash
    draw = draw_queue(s, model_version_id=newer, first_date=NIGHTS[0], last_date=NIGHTS[0],
                      sample_size=60, seed=0, created_by="t")
    same = again.call_ids[0]
    assert any(c.call_id == same and c.reviewed for c in draw.calls)
    assert same in reviewed_calls(s, model_version_id=newer).call_ids


# --------------------------------------------------------------------------------------------
# The reviewer role
# --------------------------------------------------------------------------------------------


def _as(session: Session, role: str, sql: str, params: dict[str, object] | None = None) -> object:
    with session.begin_nested():
        session.execute(text(f"SET LOCAL ROLE {role}"))
        return session.execute(text(sql), params or {}).all()


def _refused(session: Session, role: str, sql: str, params: dict[str, object] | None = None
             ) -> bool:
    try:
        _as(session, role, sql, params)
    except DBAPIError as exc:
        # no privilege, or a view nobody can write through
        return getattr(exc.orig, "pgcode", None) in ("42501", "55000", "0A000")
    return False


def test_reviewer_adds_reviews_and_reads_views_and_nothing_else(
        db_session: Session, site: dict[str, object]) -> None:
    s = db_session
    call = int(site["calls"][1])  # type: ignore[index]
    rows = _as(s, "ser_reviewer", "SELECT analytics.add_review(:c, 'wrong', 'angry', 'n')",
               {"c": call})
    assert rows
    got = _as(s, "ser_reviewer", "SELECT verdict, reviewed_by FROM analytics.reviews "
              "WHERE call_id = :c", {"c": call})
    login = s.execute(text("SELECT session_user")).scalar_one()
    assert got == [("wrong", login)]  # the login that holds the role, not the role
    assert _as(s, "ser_reviewer", "SELECT count(*) FROM analytics.calls")
    for sql in ("SELECT * FROM public.call_reviews", "SELECT * FROM public.calls",
                "SELECT * FROM public.actors",
                ("INSERT INTO public.call_reviews (call_key, batch_date, escalated, verdict, "
                 "reviewed_by) VALUES ('x', '2026-01-01', false, 'right', 'x')"),
                "UPDATE public.call_summaries SET escalated = true",
                "DELETE FROM public.call_reviews",
                "INSERT INTO public.site_operating_points (model_version_id) VALUES (1)",
                "INSERT INTO analytics.reviews (call_key) VALUES ('x')",
                "DELETE FROM analytics.reviews"):
        assert _refused(s, "ser_reviewer", sql), sql
    # analysts read the verdicts but may not add one
    assert _as(s, "ser_analyst", "SELECT count(*) FROM analytics.reviews")
    assert _refused(s, "ser_analyst", "SELECT analytics.add_review(:c, 'right')", {"c": call})


# --------------------------------------------------------------------------------------------
# The queue and the estimates
# --------------------------------------------------------------------------------------------


def test_queue_takes_every_escalation_and_a_seeded_sample_with_its_probability(
        db_session: Session, site: dict[str, object]) -> None:
    s, mv = db_session, int(site["mv"])  # type: ignore[call-overload]
    pop = _population(s, mv)
    n_esc = sum(e for e, _ in pop.values())
    n_not = len(pop) - n_esc
    assert n_esc > 5 and n_not > 40
    with s.begin_nested() as nested:
        again = draw_queue(s, model_version_id=mv, first_date=NIGHTS[0], last_date=NIGHTS[-1],
                           sample_size=25, seed=3, created_by="t")
        nested.rollback()
    draw = draw_queue(s, model_version_id=mv, first_date=NIGHTS[0], last_date=NIGHTS[-1],
                      sample_size=25, seed=3, created_by="t")
    assert [c.call_id for c in draw.calls] == [c.call_id for c in again.calls]  # seeded
    escalated = [c for c in draw.calls if c.stratum == "escalated"]
    others = [c for c in draw.calls if c.stratum == "not_escalated"]
    assert {c.call_id for c in escalated} == {c for c, (e, _) in pop.items() if e}
    assert all(c.probability == 1.0 for c in escalated)
    assert len(others) == 25 and not any(pop[c.call_id][0] for c in others)
    assert all(c.probability == pytest.approx(25 / n_not) for c in others)
    assert (draw.n_escalated, draw.n_not_escalated) == (n_esc, n_not)
    # a second draw takes only calls no queue holds yet
    more = draw_queue(s, model_version_id=mv, first_date=NIGHTS[0], last_date=NIGHTS[-1],
                      sample_size=10, seed=4, created_by="t")
    assert not {c.call_id for c in more.calls} & {c.call_id for c in draw.calls}
    assert all(c.probability == pytest.approx(10 / (n_not - 25)) for c in more.calls)
    assert len(queue_calls(s, model_version_id=mv, pending_only=True)) == len(draw.calls) + 10


def test_a_census_queue_measures_the_truth_exactly(db_session: Session,
                                                   site: dict[str, object]) -> None:
    s, mv = db_session, int(site["mv"])  # type: ignore[call-overload]
    draw = draw_queue(s, model_version_id=mv, first_date=NIGHTS[0], last_date=NIGHTS[-1],
                      sample_size=10_000, seed=0, created_by="t")
    _judge_all(s, mv, [c.call_id for c in draw.calls])
    pop = np.array(list(_population(s, mv).values()))
    tp = float((pop[:, 0] & pop[:, 1]).sum())
    calls = reviewed_calls(s, model_version_id=mv)
    assert np.allclose(calls.weights, 1.0)
    est = estimate_point(calls.escalated, calls.truth, calls.weights)
    assert est.precision is not None and est.recall is not None
    assert est.precision.value == pytest.approx(tp / pop[:, 0].sum())
    assert est.recall.value == pytest.approx(tp / pop[:, 1].sum())


def test_weighted_estimates_are_unbiased_and_cover_on_a_known_population() -> None:
    """The queue's design (all flagged calls, a simple random sample of the rest, weights
    1/probability) on a synthetic population of 3000 calls, redrawn 400 times."""
    rng = np.random.default_rng(7)
    n = 3000
    score = rng.random(n)
    truth = rng.random(n) < np.clip(score * 0.5, 0, 1)
    flagged = score > 0.8
    true_p = (flagged & truth).sum() / flagged.sum()
    true_r = (flagged & truth).sum() / truth.sum()
    others = np.flatnonzero(~flagged)
    recalls, covered_p, covered_r = [], 0, 0
    for _ in range(400):
        picked = rng.choice(others, size=150, replace=False)
        idx = np.concatenate([np.flatnonzero(flagged), picked])
        w = np.where(flagged[idx], 1.0, len(others) / 150)
        est = estimate_point(flagged[idx], truth[idx], w)
        assert est.precision is not None and est.recall is not None
        assert est.precision.value == pytest.approx(true_p)  # flagged calls: a census
        recalls.append(est.recall.value)
        covered_p += est.precision.low <= true_p <= est.precision.high
        covered_r += est.recall.low <= true_r <= est.recall.high
    assert abs(np.mean(recalls) - true_r) < 0.01
    assert covered_p == 400
    # a 90 % interval, on the safe side: its effective size ignores that the flagged calls
    # are a census
    assert covered_r / 400 >= 0.88


def test_a_budget_splits_between_the_strata() -> None:
    # the escalations fit beside half of the budget: all of them, the rest to the others
    assert split_budget(60, n_escalated=20, n_not_escalated=500) == (20, 40)
    # they would not: half (rounded up) to the calls not escalated, the rest sampled escalations
    assert split_budget(60, n_escalated=55, n_not_escalated=35) == (30, 30)
    assert split_budget(61, n_escalated=200, n_not_escalated=800) == (30, 31)
    # a stratum smaller than its share leaves the rest to the other
    assert split_budget(60, n_escalated=55, n_not_escalated=10) == (50, 10)
    assert split_budget(60, n_escalated=5, n_not_escalated=10) == (5, 10)
    assert split_budget(0, n_escalated=5, n_not_escalated=10) == (0, 0)
    with pytest.raises(ValueError, match="budget must be 0 or more"):
        split_budget(-1, n_escalated=5, n_not_escalated=10)


def test_queue_within_a_budget_samples_both_strata_with_their_probabilities(
        db_session: Session, site: dict[str, object]) -> None:
    s, mv = db_session, int(site["mv"])  # type: ignore[call-overload]
    pop = _population(s, mv)
    n_esc = sum(e for e, _ in pop.values())
    n_not = len(pop) - n_esc
    budget = n_esc  # the escalations alone would take it all
    want_esc, want_not = split_budget(budget, n_escalated=n_esc, n_not_escalated=n_not)
    assert 0 < want_esc < n_esc and want_not >= budget / 2
    with s.begin_nested() as nested:
        again = draw_queue(s, model_version_id=mv, first_date=NIGHTS[0], last_date=NIGHTS[-1],
                           sample_size=0, seed=5, created_by="t", budget=budget)
        nested.rollback()
    draw = draw_queue(s, model_version_id=mv, first_date=NIGHTS[0], last_date=NIGHTS[-1],
                      sample_size=0, seed=5, created_by="t", budget=budget)
    assert [c.call_id for c in draw.calls] == [c.call_id for c in again.calls]  # seeded
    assert len(draw.calls) == budget
    escalated = [c for c in draw.calls if c.stratum == "escalated"]
    others = [c for c in draw.calls if c.stratum == "not_escalated"]
    assert len(escalated) == want_esc and all(pop[c.call_id][0] for c in escalated)
    assert len(others) == want_not and not any(pop[c.call_id][0] for c in others)
    assert all(c.probability == pytest.approx(want_esc / n_esc) for c in escalated)
    assert all(c.probability == pytest.approx(want_not / n_not) for c in others)
    assert (draw.budget, draw.escalated_size, draw.sample_size) == (budget, want_esc, want_not)
    # judged, each stratum's weights add up to its size in the span: the estimates stand for
    # every call, escalated or not
    _judge_all(s, mv, [c.call_id for c in draw.calls])
    calls = reviewed_calls(s, model_version_id=mv)
    esc = calls.stratum == "escalated"
    assert calls.weights[esc].sum() == pytest.approx(n_esc)
    assert calls.weights[~esc].sum() == pytest.approx(n_not)
    # half of one stratum judged: the other half stands for it
    s.execute(text("DELETE FROM call_reviews WHERE call_id = ANY(:ids)"),
              {"ids": [c.call_id for c in escalated[: want_esc // 2]]})
    calls = reviewed_calls(s, model_version_id=mv)
    esc = calls.stratum == "escalated"
    assert calls.weights[esc].sum() == pytest.approx(n_esc)


def test_budget_estimates_are_unbiased_and_cover_on_a_known_population() -> None:
    """The budget design (a simple random sample of each stratum, split by ``split_budget``,
    weights 1/probability) on synthetic populations where the escalations alone would exceed
    the budget, redrawn 400 times each: both 90 % intervals cover the truth at their rate."""
    rng = np.random.default_rng(11)
    # (calls, flag threshold on the score, truth's slope, budget): the bench's site (90 calls,
    # 60 reviews) and a large one with escalations 20 times the budget
    for n, threshold, slope, budget in ((90, 0.39, 0.9, 60), (400, 0.4, 1.3, 60),
                                        (3000, 0.6, 0.6, 60)):
        score = rng.random(n)
        truth = rng.random(n) < np.clip(score * slope, 0, 1)
        flagged = score > threshold
        true_p = (flagged & truth).sum() / flagged.sum()
        true_r = (flagged & truth).sum() / truth.sum()
        esc_ids, other_ids = np.flatnonzero(flagged), np.flatnonzero(~flagged)
        k_esc, k_not = split_budget(budget, n_escalated=len(esc_ids),
                                    n_not_escalated=len(other_ids))
        assert k_esc < len(esc_ids)  # the escalated stratum is sampled
        precisions, recalls, covered_p, covered_r = [], [], 0, 0
        for _ in range(400):
            idx = np.concatenate([rng.choice(esc_ids, size=k_esc, replace=False),
                                  rng.choice(other_ids, size=k_not, replace=False)])
            w = np.where(flagged[idx], len(esc_ids) / k_esc, len(other_ids) / k_not)
            est = estimate_point(flagged[idx], truth[idx], w)
            assert est.precision is not None and est.recall is not None
            precisions.append(est.precision.value)
            recalls.append(est.recall.value)
            covered_p += est.precision.low <= true_p <= est.precision.high
            covered_r += est.recall.low <= true_r <= est.recall.high
        assert abs(np.mean(precisions) - true_p) < 0.01, n
        assert abs(np.mean(recalls) - true_r) < 0.02, n  # a ratio: nearly unbiased
        assert 0.85 <= covered_p / 400, (n, covered_p)
        assert 0.85 <= covered_r / 400, (n, covered_r)


def test_wilson_interval_stays_in_range_and_shrinks() -> None:
    assert wilson_interval(1.0, 5) [1] == 1.0 and wilson_interval(1.0, 5)[0] < 1.0
    assert wilson_interval(0.0, 5)[0] == 0.0
    wide, narrow = wilson_interval(0.5, 10), wilson_interval(0.5, 1000)
    assert wide[1] - wide[0] > narrow[1] - narrow[0]


# --------------------------------------------------------------------------------------------
# Calibration
# --------------------------------------------------------------------------------------------


def test_too_few_reviews_is_a_clear_message_and_stores_nothing(
        db_session: Session, site: dict[str, object]) -> None:
    s, mv = db_session, int(site["mv"])  # type: ignore[call-overload]
    draw = draw_queue(s, model_version_id=mv, first_date=NIGHTS[0], last_date=NIGHTS[0],
                      sample_size=5, seed=0, created_by="t")
    _judge_all(s, mv, [c.call_id for c in draw.calls][:6])
    with pytest.raises(CalibrationError, match="too few reviews to decide: 6 reviewed"):
        calibrate(s, model_version_id=mv, created_by="t")
    assert s.execute(text("SELECT count(*) FROM site_operating_points")).scalar_one() == 0
    assert point_in_use(s, mv).source == "model"


def test_calibration_chooses_a_point_reaching_the_target_and_stores_it_audited(
        db_session: Session, site: dict[str, object]) -> None:
    s, mv = db_session, int(site["mv"])  # type: ignore[call-overload]
    draw = draw_queue(s, model_version_id=mv, first_date=NIGHTS[0], last_date=NIGHTS[-1],
                      sample_size=60, seed=1, created_by="t")
    reviews = _judge_all(s, mv, [c.call_id for c in draw.calls])
    dry = calibrate(s, model_version_id=mv, created_by="t", dry_run=True)
    assert dry.site_point_id is None and site_point_record(s, mv) is None
    result = calibrate(s, model_version_id=mv, target_precision=0.8, created_by="carol")
    assert result.rules_after == dry.rules_after
    assert result.after.precision is not None and result.after.precision.value >= 0.8
    assert result.before.recall is not None and result.after.recall is not None
    assert result.after.recall.value >= result.before.recall.value
    assert result.changed
    row = s.execute(text("SELECT * FROM site_operating_points WHERE id = :i"),
                    {"i": result.site_point_id}).mappings().one()
    assert row["model_version_id"] == mv and row["created_by"] == "carol"
    assert sorted(row["review_ids"]) == sorted(reviews)
    assert row["target_precision"] == 0.8 and row["rules"] == result.rules_after
    assert row["before"]["precision"]["value"] == result.before.precision.value  # type: ignore[union-attr]
    assert row["after"]["recall"]["value"] == result.after.recall.value
    assert row["after"]["decision"] == {"confidence": 0.9, "kept": False,
                                        "reason": result.reason}
    assert "the new point reaches it with 90% confidence" in result.reason
    point = point_in_use(s, mv)
    assert point.source == "site"
    assert [r.name for r in point.rules] == [r["name"] for r in result.rules_after]
    summary = site_summary(s, mv)
    assert summary["source"] == "site" and summary["n_queue_reviews"] == len(reviews)
    assert summary["estimate"]["precision"]["value"] == pytest.approx(
        result.after.precision.value)


def test_calibration_that_cannot_reach_the_target_keeps_the_point(
        db_session: Session, site: dict[str, object]) -> None:
    s, mv = db_session, int(site["mv"])  # type: ignore[call-overload]
    draw = draw_queue(s, model_version_id=mv, first_date=NIGHTS[0], last_date=NIGHTS[-1],
                      sample_size=60, seed=1, created_by="t")
    # reviewers who hear anger nowhere: every escalation was wrong, every other call right
    record_reviews(s, [Verdict(c.call_id, "wrong" if c.stratum == "escalated" else "right")
                       for c in draw.calls], reviewed_by="t")
    with pytest.raises(CalibrationError, match="too few reviews"):
        calibrate(s, model_version_id=mv, created_by="t")
    # now some should escalate, but no threshold separates them from the rest
    pop = _population(s, mv)
    rng = np.random.default_rng(0)
    record_reviews(s, [Verdict(c.call_id, "wrong" if (rng.random() < 0.3) != pop[c.call_id][0]
                               else "right") for c in draw.calls], reviewed_by="t")
    with pytest.raises(CalibrationError, match=r"misses precision 0.95 .*no threshold reaches it "
                                               r"with 90% confidence"):
        calibrate(s, model_version_id=mv, target_precision=0.95, created_by="t")
    assert site_point_record(s, mv) is None


def test_revert_returns_to_the_model_point_and_keeps_the_history(
        db_session: Session, site: dict[str, object]) -> None:
    s, mv = db_session, int(site["mv"])  # type: ignore[call-overload]
    with pytest.raises(CalibrationError, match="uses no site point"):
        revert(s, model_version_id=mv, created_by="t")
    draw = draw_queue(s, model_version_id=mv, first_date=NIGHTS[0], last_date=NIGHTS[-1],
                      sample_size=60, seed=1, created_by="t")
    _judge_all(s, mv, [c.call_id for c in draw.calls])
    model_rules = rules_as_data(point_in_use(s, mv).rules)
    chosen = calibrate(s, model_version_id=mv, created_by="carol")
    assert point_in_use(s, mv).source == "site"
    back = revert(s, model_version_id=mv, created_by="dave")
    assert back.retired_site_point_id == chosen.site_point_id
    assert back.rules_before == chosen.rules_after and back.rules_after == model_rules
    point = point_in_use(s, mv)
    assert point.source == back.source_after == "model"
    assert rules_as_data(point.rules) == model_rules
    assert site_point_record(s, mv) is None and site_summary(s, mv)["site_point"] is None
    rows = s.execute(text("SELECT * FROM site_operating_points WHERE model_version_id = :m "
                          "ORDER BY id"), {"m": mv}).mappings().all()
    # the calibration's row stays; the revert is one more row, with no rules
    assert [r["id"] for r in rows] == [chosen.site_point_id, back.site_point_id]
    assert rows[0]["rules"] == chosen.rules_after
    assert rows[1]["rules"] == [] and rows[1]["created_by"] == "dave"
    assert rows[1]["before"]["site_point_id"] == chosen.site_point_id
    assert rows[1]["after"]["source"] == "model" and rows[1]["after"]["rules"] == model_rules
    with pytest.raises(CalibrationError, match="uses no site point"):
        revert(s, model_version_id=mv, created_by="t")
    # calibrating again starts from the model's point
    again = calibrate(s, model_version_id=mv, created_by="carol")
    assert again.rules_before == model_rules and point_in_use(s, mv).source == "site"


# --------------------------------------------------------------------------------------------
# Scoring uses the site point; the CLI
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny(engine: Engine) -> Iterator[int]:
    from tests.conftest import truncate_all
    from tests.utils.nightly import train_tiny_model

    truncate_all(engine)
    with session_scope(engine) as session:
        model = train_tiny_model(session)
    yield model
    truncate_all(engine)


def test_nightly_scoring_uses_the_site_point(engine: Engine, tiny: int, tmp_path: Path) -> None:
    from etl.runs.batch import score_batch
    from etl.scoring.config import ScoringConfig
    from etl.synthetic.calls import generate_calls
    from etl.synthetic.clips import ClipBank

    generate_calls(tmp_path, n_calls=2, minutes=0.3,
                   bank=ClipBank.synthetic(actors=range(1, 5), per_emotion=1), seed=5)
    rules = [{"name": "site_any_call", "metric": "silence_share", "op": ">=", "threshold": 0.0}]
    with session_scope(engine) as session:
        session.execute(text("""
            INSERT INTO site_operating_points (model_version_id, rules, confidence_floor,
                target_precision, review_ids, before, after, created_by)
            VALUES (:m, CAST(:r AS jsonb), 0, 0.8, '{}', '{}', '{}', 't')"""),
            {"m": tiny, "r": json.dumps(rules)})
    report = score_batch(engine, tmp_path, batch_date=DAY, workers=1,
                         config=ScoringConfig(max_duration_s=60.0))
    assert report.n_scored == 2
    with engine.connect() as conn:
        rows = conn.execute(text("""
            SELECT s.escalation_rule, c.extra ->> 'escalation_rules' AS source
            FROM calls c JOIN call_summaries s ON s.call_id = c.id""")).all()
    assert [(r.escalation_rule, r.source) for r in rows] == [("site_any_call", "site")] * 2


def test_cli_review_queue_and_calibrate(db_cli: CliRunner, engine: Engine, tiny: int) -> None:
    from tests.conftest import truncate_all

    truncate_all(engine)
    with session_scope(engine) as s:
        fs = f.make_feature_set(s)
        mv = f.make_model_version(s, clip_ids=[], feature_set_id=fs, with_metrics=False)
        _set_model_point(s, mv)
        for k, day in enumerate(NIGHTS):
            f.make_batch(s, model_version_id=mv, batch_date=day, n_calls=60, seed=10 + k,
                         failure_rate=0.0, mood=0.3)
    out = db_cli.invoke(app, ["calibrate"])
    assert out.exit_code == 2 and "too few reviews to decide" in out.output
    out = db_cli.invoke(app, ["review", "queue", "--budget", "10", "--sample", "5"])
    assert out.exit_code == 2 and "--budget or --sample, not both" in out.output
    out = db_cli.invoke(app, ["review", "queue", "--nights", "3", "--sample", "60",
                              "--seed", "1", "--by", "dana"])
    assert out.exit_code == 0, out.output
    assert "escalated calls and 60 of" in out.output
    with session_scope(engine) as s:
        ids = [c.call_id for c in queue_calls(s, model_version_id=mv)]
        _judge_all(s, mv, ids[1:])
    first = ids[0]
    out = db_cli.invoke(app, ["review", "add", str(first), "right", "--emotion", "angry",
                              "--by", "dana"])
    assert out.exit_code == 0 and f"call {first} judged right by dana" in out.output
    out = db_cli.invoke(app, ["review", "add", str(first), "perhaps"])
    assert out.exit_code == 2 and "right or wrong" in out.output
    out = db_cli.invoke(app, ["calibrate", "--dry-run", "--nights", "2"])
    assert out.exit_code == 0, out.output
    assert "dry run: nothing stored" in out.output and out.output.count("would escalate") == 2
    assert ("rule:   a new threshold only where the reviews show precision >= 0.8 with 90% "
            "confidence (one-sided); the point in use unless they show with 90% confidence "
            "that it misses") in out.output
    assert "why:    the reviews show" in out.output
    out = db_cli.invoke(app, ["calibrate", "--by", "erin"])
    assert out.exit_code == 0 and "stored as site point" in out.output, out.output
    out = db_cli.invoke(app, ["review", "estimate"])
    assert "escalation point: site" in out.output and "90% interval" in out.output
    out = db_cli.invoke(app, ["models", "show", str(mv)])
    assert out.exit_code == 0, out.output
    assert "site precision" in out.output and "reviews" in out.output
    assert "training estimate: precision 0.59, recall 0.70" in out.output
    out = db_cli.invoke(app, ["calibrate", "--revert", "--dry-run"])
    assert out.exit_code == 2 and "no --dry-run" in out.output
    out = db_cli.invoke(app, ["calibrate", "--revert", "--by", "fay"])
    assert out.exit_code == 0 and "retired" in out.output, out.output
    out = db_cli.invoke(app, ["review", "estimate"])
    assert "escalation point: model" in out.output
    out = db_cli.invoke(app, ["calibrate", "--revert"])
    assert out.exit_code == 2 and "uses no site point" in out.output
    truncate_all(engine)


def test_cli_review_queue_within_a_budget(db_cli: CliRunner, engine: Engine) -> None:
    from tests.conftest import truncate_all

    truncate_all(engine)
    with session_scope(engine) as s:
        fs = f.make_feature_set(s)
        mv = f.make_model_version(s, clip_ids=[], feature_set_id=fs, with_metrics=False)
        for k, day in enumerate(NIGHTS):
            f.make_batch(s, model_version_id=mv, batch_date=day, n_calls=60, seed=10 + k,
                         failure_rate=0.0, mood=0.3)
        n_esc = sum(e for e, _ in _population(s, mv).values())
    budget = n_esc  # more escalations than half of it
    out = db_cli.invoke(app, ["review", "queue", "--nights", "3", "--budget", str(budget),
                              "--seed", "2"])
    assert out.exit_code == 0, out.output
    k_esc, k_not = split_budget(budget, n_escalated=n_esc, n_not_escalated=180 - n_esc)
    assert (f"{k_esc} of {n_esc} escalated calls and {k_not} of {180 - n_esc} not escalated "
            f"(seed 2, budget {budget})") in out.output
    assert f"p={k_esc / n_esc:.3f}" in out.output
    truncate_all(engine)


def test_reports_show_the_site_measured_numbers(db_session: Session, site: dict[str, object],
                                                tmp_path: Path) -> None:
    from reports import build

    s, mv = db_session, int(site["mv"])  # type: ignore[call-overload]
    html = build.batch_report(s, NIGHTS[0], tmp_path).read_text()
    assert "escalation point model: no reviewed calls yet" in html
    draw = draw_queue(s, model_version_id=mv, first_date=NIGHTS[0], last_date=NIGHTS[-1],
                      sample_size=60, seed=1, created_by="t")
    _judge_all(s, mv, [c.call_id for c in draw.calls])
    calibrate(s, model_version_id=mv, created_by="t")
    summary = site_summary(s, mv)
    precision = summary["estimate"]["precision"]
    html = build.batch_report(s, NIGHTS[0], tmp_path).read_text()
    assert (f"escalation point site: measured at this site on {len(draw.calls)} reviewed calls, "
            f"precision {precision['value']:.2f} (90% interval {precision['low']:.2f}–"
            f"{precision['high']:.2f})") in html
    html = build.model_report(s, mv, tmp_path).read_text()
    assert "Escalations at this site" in html and f"{len(draw.calls)} reviewed" in html
