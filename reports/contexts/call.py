"""The call report's context: emotion over time per role, talk and overtalk, the conversation
(quarters, interruptions, long silences) and where the escalation fired."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pandas as pd
from sqlalchemy.orm import Session

from reports import charts, queries
from reports.common import batch_file, finite, negative_mass, probabilities
from reports.contexts.escalation import escalation_focus, overtalk
from reports.contexts.player import player_context

ROLES = ("customer", "agent")


def call_context(session: Session, call_id: int, *, embed_excerpt: bool = False) -> dict[str, Any]:
    """Everything the call report shows, as template-ready values (``embed_excerpt``: copy the
    flagged stretch's audio into the page, see :mod:`reports.contexts.player`)."""
    call = queries.call_detail(session, call_id)
    segs = queries.call_segments(session, call_id, int(call["model_version_id"]))
    negative = queries.negative_classes(session, call["label_scheme"])
    classes = list(call["classes"])
    # Negative classes at the bottom of each band, so the red mass reads as "how negative".
    band_order = [c for c in classes if c in negative] + [c for c in classes if c not in negative]
    duration = finite(call["duration_s"]) or float(segs["end_s"].max() if len(segs) else 1.0)
    focus = escalation_focus(call, segs, negative, call.get("batch_options"))
    window = None if focus is None else focus.window
    roles = [*ROLES] + sorted(set(segs["role"]) - set(ROLES))
    spans = overtalk(segs)
    conversation = _conversation(session, call)
    mix_rows = _mix_rows(segs, roles)
    return {
        "kind": "call",
        "title": f"Call {call['call_key']}",
        "subtitle": f"batch {call['batch_date']} · queue {call['queue'] or '–'} · agent "
                    f"{call['agent_id'] or '–'} · model {call['model_name']} v{call['model_version']}",
        "generated_at": dt.datetime.now(dt.UTC),
        "call": call,
        "classes": classes,
        "timeline": charts.timeline(
            _chart_segments(segs), duration_s=duration, classes=band_order, roles=roles,
            overtalk=spans, conversation=conversation,
            escalation=(window[0], window[1], str(call["escalation_rule"])) if window else None),
        "legend": charts.legend(charts.class_colors(band_order)),
        "window": window,
        "window_what": focus.what if focus else None,
        "player": player_context(call, segs, window, focus.what if focus else None,
                                 embed_excerpt=embed_excerpt),
        "n_segments": len(segs),
        "n_abstained": int(segs["abstained"].sum()) if "abstained" in segs else 0,
        "n_overtalk": len(spans),
        "mix_chart": charts.stacked_share_bars(mix_rows, band_order, title="emotion mix per role")
        if mix_rows else None,
        "stored_mix": call["emotion_mix"] if isinstance(call["emotion_mix"], dict) else {},
        "segments": _segment_rows(segs, negative, window),
        "conversation": conversation,
        "has_conversation": finite(call.get("interruptions_by_agent")) is not None,
        "quarter_rows": [{"role": role, "shares": [q.get(role) for q in conversation.quarters]}
                         for role in ROLES],
        "batch_file": "../" + batch_file(call["batch_date"]),
        "meta": _meta(call, duration),
        "root": "../",
    }


def _meta(call: dict[str, Any], duration: float) -> dict[str, Any]:
    """What the index lists for this report."""
    return {"kind": "call", "sort": f"{call['batch_date']} {call['call_key']}",
            "escalated": bool(call["escalated"]),
            "summary": (f"escalated: {call['escalation_rule']}" if call["escalated"]
                        else "not escalated") + f" · batch {call['batch_date']} · "
                       f"{charts.mmss(duration)}"}


def _conversation(session: Session, call: dict[str, Any]) -> charts.Conversation:
    """Quarters, interruptions and long silences of a call (its stored metrics and events)."""
    events = queries.call_events(session, int(call["id"]), int(call["model_version_id"]))
    quarters = [{role: finite(call.get(f"negative_share_{role}_q{k}")) for role in ROLES}
                for k in range(1, 5)]
    return charts.Conversation(
        quarters=quarters,
        interruptions=[(float(e.start_s), float(e.end_s), str(e.role))
                       for e in events.itertuples() if e.kind == "interruption"],
        silences=[(float(e.start_s), float(e.end_s))
                  for e in events.itertuples() if e.kind == "silence"])


def _chart_segments(segs: pd.DataFrame) -> list[charts.Segment]:
    return [charts.Segment(str(s.role), float(s.start_s), float(s.end_s),
                           probabilities(s.probabilities), str(s.emotion))
            for s in segs.itertuples()]


def _mix_rows(segs: pd.DataFrame, roles: list[str]) -> list[tuple[str, dict[str, float]]]:
    """(role, {emotion: seconds}) for each role that spoke."""
    rows = []
    for role in roles:
        r = segs[segs["role"] == role]
        if len(r):
            secs = (r["end_s"] - r["start_s"]).groupby(r["emotion"]).sum()
            rows.append((role, {str(k): float(v) for k, v in secs.items()}))
    return rows


def _segment_rows(segs: pd.DataFrame, negative: set[str],
                  window: tuple[float, float] | None) -> list[dict[str, Any]]:
    """The segments table; customer segments inside the escalation window are marked."""
    rows = []
    for s in segs.itertuples():
        rows.append({"role": s.role, "start_s": float(s.start_s), "end_s": float(s.end_s),
                     "emotion": s.emotion, "confidence": float(s.confidence),
                     "negative": negative_mass(probabilities(s.probabilities), negative),
                     "abstained": bool(getattr(s, "abstained", False)),
                     "in_window": bool(window and s.role == "customer"
                                       and float(s.end_s) > window[0]
                                       and float(s.start_s) < window[1])})
    return rows
