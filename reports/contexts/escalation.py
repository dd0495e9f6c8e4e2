"""Where in a call its escalation fired, from the scorer's record or the rule's metric, and the
segment intervals that say so (negative runs, overtalk). Shared by the batch and call reports."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd

from etl.audio.intervals import intersect_regions
from reports.common import extra, finite

# The scorer's default gap between segments that still counts as one negative streak.
DEFAULT_STREAK_GAP_S = 2.0


@dataclass(frozen=True)
class Focus:
    """The stretch of an escalated call a listener should start with, and what it is."""

    start_s: float
    end_s: float
    what: str

    @property
    def window(self) -> tuple[float, float]:
        return self.start_s, self.end_s


def overtalk(segs: pd.DataFrame) -> list[tuple[float, float]]:
    """Stretches where agent and customer segments overlap."""
    def spans(role: str) -> list[tuple[float, float]]:
        return sorted((float(s.start_s), float(s.end_s))
                      for s in segs[segs["role"] == role].itertuples())

    return intersect_regions(spans("agent"), spans("customer"))


def rule_metrics(options: Any) -> dict[str, str]:
    """rule name -> summary metric, from the rules the scorer stored with the batch."""
    rules = extra(options).get("rules")  # "model": the model's operating point (same rule names)
    return {str(r.get("name")): str(r.get("metric")) for r in
            (rules if isinstance(rules, list) else []) if isinstance(r, dict)}


def longest_negative_run(segs: pd.DataFrame, role: str, negative: set[str],
                         gap_s: float) -> tuple[float, float] | None:
    """The longest run of consecutive negative segments of ``role`` (as the scorer counts it)."""
    best: tuple[float, float] | None = None
    run_start: float | None = None
    run_end = 0.0
    for seg in segs[segs["role"] == role].sort_values("start_s").itertuples():
        is_neg = bool(seg.is_negative) if seg.is_negative is not None else (
            str(seg.emotion) in negative)
        start, end = float(seg.start_s), float(seg.end_s)
        if is_neg and run_start is not None and start - run_end <= gap_s:
            run_end = max(run_end, end)
        elif is_neg:
            run_start, run_end = start, end
        else:
            run_start = None
        if run_start is not None and (best is None or run_end - run_start > best[1] - best[0]):
            best = (run_start, run_end)
    return best


def escalation_window(call: dict[str, Any], segments: pd.DataFrame, negative: set[str],
                      options: Any = None) -> tuple[float, float] | None:
    """Where in the call the escalation rule fired, as (start_s, end_s); None if not escalated."""
    focus = escalation_focus(call, segments, negative, options)
    return None if focus is None else focus.window


def escalation_focus(call: dict[str, Any], segments: pd.DataFrame, negative: set[str],
                     options: Any = None) -> Focus | None:
    """The stretch of an escalated call to listen to; None if not escalated.

    The scorer's own record (``calls.extra.escalation.start_s/end_s``) wins when present.
    Otherwise the rule's metric (from the rules stored in ``batches.options``) says where:
    a negative streak -> that run; a trend or last-third rule -> the last third; overtalk ->
    first to last overtalk; a share rule or an unknown rule -> the longest negative customer run
    (where a listener should start), else the whole call.
    """
    if not call.get("escalated"):
        return None
    stored = _stored_focus(call)
    if stored is not None:
        return stored
    duration = finite(call.get("duration_s")) or (
        float(segments["end_s"].max()) if len(segments) else 0.0)
    rule = str(call.get("escalation_rule") or "")
    metric = rule_metrics(options).get(rule, rule)
    gap = finite(extra(options).get("streak_gap_s")) or DEFAULT_STREAK_GAP_S
    return _rule_focus(metric, segments, negative, duration=duration, gap_s=gap)


def _stored_focus(call: dict[str, Any]) -> Focus | None:
    """The stretch the scorer recorded in ``calls.extra.escalation``, if it recorded one."""
    ex = extra(call.get("extra"))
    rec = ex.get("escalation") if isinstance(ex.get("escalation"), dict) else None
    if not rec or finite(rec.get("start_s")) is None:
        return None
    start = float(rec["start_s"])
    end = finite(rec.get("end_s"))
    return Focus(start, end if end is not None else start + 1.0, "where the scorer says it fired")


def _rule_focus(metric: str, segments: pd.DataFrame, negative: set[str], *, duration: float,
                gap_s: float) -> Focus | None:
    """The stretch a rule on ``metric`` looks at (see :func:`escalation_focus`)."""
    if metric in ("customer_trend", "customer_negative_last_third") or any(
            w in metric for w in ("trend", "worsen", "last_third")):
        return Focus(2 * duration / 3, duration, "the last third, where the customer got worse")
    if metric == "customer_negative_first_third":
        return Focus(0.0, duration / 3, "the first third of the call")
    if "overtalk" in metric:
        spans = overtalk(segments)
        if spans:
            return Focus(spans[0][0], spans[-1][1], "from the first to the last overtalk")
    role = "agent" if metric.endswith("_agent") else "customer"
    run = longest_negative_run(segments, role, negative, gap_s)
    if run is not None:
        what = ("the longest negative streak" if "streak" in metric
                else f"the {role}'s longest negative stretch (start listening here)")
        return Focus(run[0], run[1], what)
    return Focus(0.0, duration, "the whole call") if duration else None
