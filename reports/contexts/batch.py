"""The nightly batch report's context: the night's numbers against the nights before it, the
emotion mix, escalations (most severe first), the queues and agents that moved, agents'
interruptions and dead air, failures, and every call."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from markupsafe import Markup
from sqlalchemy.orm import Session

from etl.reviews import site_summary
from reports import charts, queries
from reports.common import call_file, finite, negative_mass, rate
from reports.contexts.escalation import escalation_focus
from reports.render import fmt_pct, fmt_signed_pp

# (column of the daily trends, label, how the template formats it); the headline reads rows 1-2.
TREND_METRICS = (
    ("calls", "calls", "int"),
    ("escalation_rate", "escalation rate", "pct"),
    ("customer_negative", "customer negative share", "pct"),
    ("agent_negative", "agent negative share", "pct"),
    ("failure_rate", "failure rate", "pct"),
    ("mean_duration_s", "mean call length", "dur"),
)
# Nights of history the trend chart and the 30-night baseline look back over.
TREND_NIGHTS = 30
# Agents listed in each ranking of the batch report's conversation section.
AGENT_RANK_ROWS = 10
# Queues or agents shown in each movers chart and table.
MOVER_ROWS = 8


@dataclass(frozen=True)
class Night:
    """The batches scored on one date and their calls."""

    batches: pd.DataFrame
    ids: list[int]
    calls: pd.DataFrame
    scored: pd.DataFrame
    failed: pd.DataFrame
    escalated: pd.DataFrame  # most severe first
    classes: list[str]  # every model's classes, in first-seen order
    negative: set[str]  # negative classes of every model's label scheme


@dataclass(frozen=True)
class Trends:
    """The night against the nights before it."""

    rows: list[dict[str, Any]]
    chart: Markup | None
    has_history: bool


def batch_context(session: Session, batch_date: dt.date, out_dir: Path | None = None) -> dict[str, Any]:
    """Everything the batch report shows, as template-ready values.

    ``out_dir``: the reports folder; escalated calls whose call report is already there link it.
    """
    night = load_night(session, batch_date)
    mix_rows, mix_classes = _emotion_mix(session, night.ids, night.classes)
    trends = _trends(session, batch_date)
    n_scored, n_escalated, n_failed = len(night.scored), len(night.escalated), len(night.failed)
    # Small nights (the demo) still rank their groups; big nights ignore tiny groups.
    queues = movers(session, batch_date, by="queue", min_calls=max(2, min(5, n_scored // 20)))
    agents = movers(session, batch_date, by="agent_id", min_calls=max(2, min(3, n_scored // 50)))
    audio_s, wall_s = _throughput(night.batches)
    return {
        "kind": "batch",
        "title": f"Nightly batch {batch_date.isoformat()}",
        "subtitle": _subtitle(night.batches),
        "generated_at": dt.datetime.now(dt.UTC),
        "batch_date": batch_date,
        "batches": night.batches.to_dict("records"),
        "n_calls": len(night.calls),
        "n_scored": n_scored,
        "n_failed": n_failed,
        "n_escalated": n_escalated,
        "escalation_rate": rate(n_escalated, n_scored),
        "trust": trust(night.scored),
        "audio_hours": audio_s / 3600,
        "speed": (audio_s / wall_s) if wall_s else None,
        "failure_reasons": _failure_reasons(night.failed),
        "failed": night.failed.to_dict("records"),
        "mix_chart": charts.stacked_share_bars(mix_rows, mix_classes, width=1000,
                                               title="emotion mix per role") if mix_rows else None,
        "mix_rows": [{"role": role, **{c: shares.get(c, 0.0) for c in mix_classes}}
                     for role, shares in mix_rows],
        "mix_classes": mix_classes,
        "legend": charts.legend(charts.class_colors(mix_classes)),
        "rule_counts": _rule_counts(night.escalated),
        "site": [{"model_version_id": int(m), **site_summary(session, int(m))}
                 for m in sorted(set(night.batches["model_version_id"]))],
        "escalations": _escalation_sections(session, night, out_dir),
        "trend_rows": trends.rows,
        "trend_chart": trends.chart,
        "has_history": trends.has_history,
        "queues": queues,
        "agents": agents,
        "agent_conversation": agent_conversation(session, night.ids),
        "headline": _headline(len(night.calls), n_scored, n_failed, n_escalated, trends.rows,
                              queues),
        "calls": night.calls.to_dict("records"),
        "meta": {"kind": "batch", "sort": batch_date.isoformat(),
                 "summary": f"{n_scored} calls scored, {n_escalated} escalated "
                            f"({fmt_pct(rate(n_escalated, n_scored))}), {n_failed} failed"},
        "root": "",
    }


def load_night(session: Session, batch_date: dt.date) -> Night:
    """The batches on ``batch_date`` and their calls; ReportNotFoundError if there is none."""
    batches = queries.batches_on(session, batch_date)
    if batches.empty:
        known = queries.batch_dates(session)
        raise queries.ReportNotFoundError(
            f"no batch on {batch_date.isoformat()}; batch dates in the database: "
            f"{', '.join(d.isoformat() for d in known[-10:]) or 'none (run `ser score`)'}")
    ids = [int(i) for i in batches["id"]]
    calls = queries.batch_calls(session, ids)
    scored = calls[calls["status"] == "scored"]
    escalated = scored[scored["escalated"].astype(bool)].sort_values(
        ["longest_negative_streak_s", "negative_share_customer"], ascending=False)
    classes: list[str] = []
    negative: set[str] = set()
    for model_id in sorted({int(m) for m in batches["model_version_id"]}):
        ov = queries.model_overview(session, model_id)
        classes += [c for c in ov["classes"] if c not in classes]
        negative |= queries.negative_classes(session, ov["label_scheme"])
    return Night(batches=batches, ids=ids, calls=calls, scored=scored,
                 failed=calls[calls["status"] == "failed"], escalated=escalated, classes=classes,
                 negative=negative)


def _subtitle(batches: pd.DataFrame) -> str:
    return (", ".join(f"{r.model_name} v{r.model_version}" for r in
                      batches.drop_duplicates("model_version_id").itertuples())
            + f" · {len(batches)} batch{'es' if len(batches) > 1 else ''}")


def _throughput(batches: pd.DataFrame) -> tuple[float, float | None]:
    """Seconds of audio scored and wall-clock seconds the runs took (None when not recorded)."""
    audio_s = float(batches["audio_seconds"].sum())
    wall = [(finite((f - s).total_seconds()) if f is not None and s is not None else None)
            for s, f in zip(batches["started_at"], batches["finished_at"], strict=True)]
    return audio_s, sum(w for w in wall if w) or None


def trust(scored: pd.DataFrame) -> dict[str, float | None]:
    """Talk-weighted customer coverage and abstained share, mean confidence, over scored calls
    (None when no call has the numbers, e.g. batches scored before they were stored)."""
    out: dict[str, float | None] = {"coverage": None, "confidence": None, "abstained": None}
    if "customer_scored_share" not in scored or not len(scored):
        return out
    talk = pd.to_numeric(scored["talk_customer_s"], errors="coerce").fillna(0.0)
    for key, col in (("coverage", "customer_scored_share"),
                     ("confidence", "customer_confidence_mean"),
                     ("abstained", "customer_abstained_share")):
        values = pd.to_numeric(scored[col], errors="coerce")
        mask = values.notna() & (talk > 0)
        if mask.any():
            out[key] = float((values[mask] * talk[mask]).sum() / talk[mask].sum())
    return out


def _emotion_mix(session: Session, ids: list[int],
                 classes: list[str]) -> tuple[list[tuple[str, dict[str, float]]], list[str]]:
    """(role, {emotion: share of the role's speech time}) rows, and the classes to show."""
    mix = queries.batch_emotion_time(session, ids)
    rows = []
    for role in ("customer", "agent"):
        r = mix[mix["role"] == role]
        total = float(r["seconds"].sum())
        if total:
            rows.append((role, {str(e): float(s) / total for e, s in
                                zip(r["emotion"], r["seconds"], strict=True)}))
    mix_classes = classes + sorted(set(mix["emotion"]) - set(classes)) if len(mix) else classes
    return rows, mix_classes


def _failure_reasons(failed: pd.DataFrame) -> list[dict[str, Any]]:
    """Failed calls counted by reason, most frequent first."""
    if not len(failed):
        return []
    return (failed.groupby(failed["error"].fillna("unknown")).size()
            .sort_values(ascending=False).reset_index(name="n")
            .rename(columns={"error": "reason"}).to_dict("records"))


def _rule_counts(escalated: pd.DataFrame) -> dict[str, int]:
    if not len(escalated):
        return {}
    return escalated.groupby("escalation_rule").size().sort_values(ascending=False).to_dict()


def _headline(n_calls: int, n_scored: int, n_failed: int, n_escalated: int,
              trend_rows: list[dict[str, Any]], queues: dict[str, Any]) -> list[str]:
    """Three plain sentences a team lead can read in ten seconds."""
    esc = trend_rows[1]
    neg = trend_rows[2]
    lines = [f"{n_scored:,} of {n_calls:,} calls scored"
             + (f"; {n_failed:,} failed (reasons below)." if n_failed else "; none failed.")]
    change = (f", {fmt_signed_pp(esc['delta7'])} against the previous 7 nights"
              if esc["delta7"] is not None else "")
    lines.append(f"{n_escalated:,} calls escalated ({fmt_pct(rate(n_escalated, n_scored))})"
                 f"{change}.")
    if neg["today"] is not None:
        change = (f" ({fmt_signed_pp(neg['delta7'])} vs 7 nights, {fmt_signed_pp(neg['delta30'])} "
                  f"vs 30)" if neg["delta7"] is not None and neg["delta30"] is not None else "")
        lines.append(f"Customers sounded negative for {fmt_pct(neg['today'])} of their talk time"
                     f"{change}.")
    if queues["has_history"] and queues["rows"]:
        top = queues["rows"][0]
        lines.append(f"Queue that moved most: {top['name']} ({fmt_signed_pp(top['delta'])} "
                     f"customer negative share).")
    return lines


# --------------------------------------------------------------------------------------------
# Escalated calls
# --------------------------------------------------------------------------------------------


def _escalation_sections(session: Session, night: Night,
                         out_dir: Path | None) -> list[dict[str, Any]]:
    """One section per escalated call, with where the rule fired and a compact
    negative-probability line."""
    segs = queries.segments_for_calls(session, [int(i) for i in night.escalated["id"]])
    seg_groups = {int(k): g for k, g in segs.groupby("call_id")} if len(segs) else {}
    empty = segs.iloc[0:0]
    options = {int(b.id): b.options for b in night.batches.itertuples()}
    sections = []
    for rank, call in enumerate(night.escalated.to_dict("records"), start=1):
        call_segs = seg_groups.get(int(call["id"]), empty)
        focus = escalation_focus(call, call_segs, night.negative,
                                 options.get(int(call["batch_id"])))
        window = None if focus is None else focus.window
        has_file = out_dir is not None and (Path(out_dir) / call_file(call["id"])).exists()
        sections.append({**call, "rank": rank, "window": window,
                         "window_what": focus.what if focus else None,
                         "spark": _sparkline(call, call_segs, night.negative, window),
                         "file": call_file(call["id"]) if has_file else None})
    return sections


def _sparkline(call: dict[str, Any], segs: pd.DataFrame, negative: set[str],
               window: tuple[float, float] | None) -> Markup:
    lines = {}
    for role in ("customer", "agent"):
        r = segs[segs["role"] == role]
        lines[role] = [((float(s.start_s) + float(s.end_s)) / 2,
                        negative_mass(s.probabilities, negative)) for s in r.itertuples()]
    return charts.sparkline(lines, duration_s=float(call.get("duration_s") or 1.0),
                            escalation=window)


# --------------------------------------------------------------------------------------------
# Trends
# --------------------------------------------------------------------------------------------


def _day_metrics(df: pd.DataFrame) -> pd.DataFrame:
    """Daily rates from daily_trends rows."""
    if df.empty:
        return df.assign(escalation_rate=[], failure_rate=[])
    return df.assign(
        escalation_rate=[rate(float(e), float(s)) for e, s in zip(df["escalations"], df["scored"],
                                                                  strict=True)],
        failure_rate=[rate(float(f), float(c)) for f, c in zip(df["failed"], df["calls"],
                                                               strict=True)],
    )


def _trends(session: Session, batch_date: dt.date) -> Trends:
    """The night itself against the 7 and 30 nights before it."""
    days = _day_metrics(queries.daily_trends(
        session, batch_date - dt.timedelta(days=TREND_NIGHTS), batch_date))
    has_history = bool((days["day"] < batch_date).any()) if len(days) else False
    return Trends(rows=trend_table(days, batch_date),
                  chart=_trend_chart(days, batch_date) if has_history else None,
                  has_history=has_history)


def trend_table(days: pd.DataFrame, batch_date: dt.date) -> list[dict[str, Any]]:
    """One row per :data:`TREND_METRICS`: tonight, the 7- and 30-night baselines, the changes."""
    today = days[days["day"] == batch_date]
    out = []
    for column, label, kind in TREND_METRICS:
        value = finite(today[column].iloc[0]) if len(today) else None
        row: dict[str, Any] = {"label": label, "kind": kind, "today": value}
        for window in (7, 30):
            prev = days[(days["day"] < batch_date)
                        & (days["day"] >= batch_date - dt.timedelta(days=window))]
            vals = [v for v in (finite(x) for x in prev[column]) if v is not None]
            base = float(np.mean(vals)) if vals else None
            row[f"base{window}"] = base
            row[f"n{window}"] = len(vals)
            row[f"delta{window}"] = (value - base) if value is not None and base is not None else None
        out.append(row)
    return out


def _trend_chart(days: pd.DataFrame, batch_date: dt.date) -> Markup:
    """Nightly escalation rate and negative shares, x = nights before this one."""
    offsets = [(d - batch_date).days for d in days["day"]]
    first = min(offsets)
    step = 1 if first >= -10 else 5
    ticks = [float(o) for o in range(0, first - 1, -step)][::-1]
    shares = [v for c in ("escalation_rate", "customer_negative", "agent_negative")
              for v in (finite(x) for x in days[c]) if v is not None]
    return charts.line_chart(
        [charts.Series("escalation rate", offsets, list(days["escalation_rate"]), charts.ALERT,
                       markers=True),
         charts.Series("customer negative share", offsets,
                       [finite(v) for v in days["customer_negative"]], "#2f6db5", markers=True),
         charts.Series("agent negative share", offsets,
                       [finite(v) for v in days["agent_negative"]], "#9aa5b1", dash="4 3")],
        x_label="night (this batch highlighted)", y_label="share",
        x_range=(first - 0.5, 0.5),
        x_ticks=ticks, y_range=(0, max(0.1, min(1.0, 1.2 * max(shares or [0.1])))),
        x_tick_format=lambda v: (batch_date + dt.timedelta(days=int(v))).strftime("%d %b"),
        y_tick_format=lambda v: f"{v:.0%}", highlight_x=0.0, width=1000, height=280,
        title="nightly escalation rate and negative shares, up to 31 nights")


# --------------------------------------------------------------------------------------------
# Queues and agents
# --------------------------------------------------------------------------------------------


def movers(session: Session, batch_date: dt.date, *, by: str, min_calls: int) -> dict[str, Any]:
    """Groups whose customer negative share changed most against the previous 7 nights."""
    g = queries.group_trends(session, batch_date - dt.timedelta(days=7), batch_date, by=by)
    if g.empty:
        return {"rows": [], "chart": None, "has_history": False}
    rows = _mover_rows(g, batch_date)
    has_history = any(r["delta"] is not None for r in rows)
    # Only groups with enough calls on both sides are ranked: small groups swing by chance.
    ranked = [r for r in rows if r["delta"] is not None and r["calls"] >= min_calls
              and r["base_calls"] >= min_calls]
    ranked.sort(key=lambda r: -abs(r["delta"]))
    top = ranked[:MOVER_ROWS]
    chart = _movers_chart(top, by=by) if top else None
    if not has_history:  # first night: rank today's levels so the section is still useful
        rows.sort(key=lambda r: -(r["negative"] or 0))
        top = [r for r in rows if r["calls"] >= min_calls][:MOVER_ROWS]
    return {"rows": top, "chart": chart, "has_history": has_history}


def _mover_rows(g: pd.DataFrame, batch_date: dt.date) -> list[dict[str, Any]]:
    """Per group: tonight's negative share and escalation rate, and the same before tonight."""
    g["is_today"] = g["day"] == batch_date
    agg = g.groupby(["grp", "is_today"]).agg(
        neg=("customer_negative_s", "sum"), talk=("customer_talk_s", "sum"),
        esc=("escalations", "sum"), scored=("scored", "sum"), calls=("calls", "sum")).reset_index()
    today = agg[agg["is_today"]].set_index("grp")
    base = agg[~agg["is_today"]].set_index("grp")
    rows = []
    for grp, t in today.iterrows():
        now = rate(float(t["neg"]), float(t["talk"]))
        row = {"name": str(grp), "calls": int(t["calls"]), "negative": now,
               "escalation_rate": rate(float(t["esc"]), float(t["scored"])),
               "base_negative": None, "base_escalation_rate": None, "delta": None,
               "base_calls": 0}
        if grp in base.index:
            b = base.loc[grp]
            row["base_calls"] = int(b["calls"])
            row["base_negative"] = rate(float(b["neg"]), float(b["talk"]))
            row["base_escalation_rate"] = rate(float(b["esc"]), float(b["scored"]))
            if now is not None and row["base_negative"] is not None:
                row["delta"] = now - row["base_negative"]
        rows.append(row)
    return rows


def _movers_chart(top: list[dict[str, Any]], *, by: str) -> Markup:
    return charts.hbar_chart(
        [(r["name"], r["delta"]) for r in top],
        axis_label="change in customer negative share vs previous 7 nights (percentage points)",
        fmt=lambda v: "0" if abs(v) < 1e-9 else fmt_signed_pp(v).replace(" pp", ""),
        colors=[charts.ALERT if r["delta"] > 0 else "#58a869" for r in top],
        width=520, label_width=110, title=f"{by} movers")


def agent_conversation(session: Session, batch_ids: list[int]) -> dict[str, Any]:
    """Agents ranked by the interruptions they made and by the dead air on their calls, with
    the customer negative share and escalation rate beside them (calls with metrics only)."""
    df = queries.agent_conversation(session, batch_ids)
    rows = [{k: (finite(v) if k != "agent_id" else str(v)) for k, v in r.items()}
            for r in df.to_dict("records")]
    for r in rows:
        r["dead_air_per_call_s"] = rate(r["dead_air_s"] or 0.0, r["calls"] or 0.0)
        r["interruptions_per_call"] = rate(r["agent_interruptions"] or 0.0, r["calls"] or 0.0)
    by_interruptions = sorted(rows, key=lambda r: (-(r["interruptions_per_call"] or 0.0),
                                                   -(r["agent_interruptions"] or 0.0),
                                                   r["agent_id"]))
    by_dead_air = sorted(rows, key=lambda r: (-(r["dead_air_per_call_s"] or 0.0),
                                              r["agent_id"]))
    return {"n_agents": len(rows), "n_calls": int(sum(r["calls"] or 0 for r in rows)),
            "by_interruptions": by_interruptions[:AGENT_RANK_ROWS],
            "by_dead_air": by_dead_air[:AGENT_RANK_ROWS]}
