"""What the nightly scorer would have written for one generated call: its scored windows
(alternating turns cut into windows of at most 4 s, with overtalk; customers of angry calls
and hot queues more negative) and its summary, escalation included, under the scorer's rule
layout. Pure: ``etl.synthetic.history`` inserts the rows.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from etl.corpora.labels import is_negative_class

# Queue-level moods make "queues that moved" meaningful: cancellations runs hot.
QUEUE_BIAS = {"cancellations": 0.8, "billing": 0.3, "tech-support": 0.2, "sales": -0.4,
              "moves": 0.0}


def _call_segments(call_id: int, call: dict[str, object], *, model_version_id: int,
                   classes: Sequence[str], mood: float,
                   rng: np.random.Generator) -> list[dict[str, object]]:
    """Scored windows of one call: alternating turns of 2-16 s (sometimes overlapping), cut into
    windows of at most 4 s like the scorer does; customers of an angry call grow more negative."""
    duration = float(call["duration_s"])  # type: ignore[arg-type]
    k = len(classes)
    neg_idx = [i for i, c in enumerate(classes) if is_negative_class(c)]
    calm = classes.index("calm") if "calm" in classes else 0
    anger = rng.normal(mood + QUEUE_BIAS[str(call["queue"])] - 0.3, 0.8)
    rising = anger > 1.3  # these calls get worse over time: the escalation candidates
    t, role = 0.5, "agent"
    call_segs: list[dict[str, object]] = []
    while t < duration - 1.0:
        end = min(t + float(rng.uniform(2.0, 16.0)), duration)
        progress = t / duration
        turn = rng.normal(0, 0.6, k)
        if role == "customer":
            turn[calm] += 1.0
            boost = max(anger, 0.0) * (0.5 + (2.5 * progress if rising else 0.2))
            for j in neg_idx:
                turn[j] += boost * (1.4 if classes[j] == "angry" else 0.6)
        else:
            turn[calm] += 1.6
        w0 = t
        while w0 < end - 0.3:
            w1 = min(w0 + 4.0, end)
            logits = turn + rng.normal(0, 0.5, k)
            proba = np.exp(logits) / np.exp(logits).sum()
            top = int(proba.argmax())
            call_segs.append({
                "call_id": call_id, "model_version_id": model_version_id, "role": role,
                "start_s": round(w0, 2), "end_s": round(w1, 2), "emotion": classes[top],
                "confidence": float(proba[top]), "is_negative": is_negative_class(classes[top]),
                "probabilities": {c: round(float(v), 4)
                                  for c, v in zip(classes, proba, strict=True)},
            })
            w0 = w1
        # Next turn: the other role, sometimes starting before this one ends (overtalk).
        overlap = (float(rng.uniform(0.3, 1.5)) if rng.random() < 0.15
                   else -float(rng.uniform(0.2, 1.5)))
        t = max(end - overlap, t + 0.5)
        role = "customer" if role == "agent" else "agent"
    return call_segs


STREAK_GAP_S = 2.0
# The scorer's rule layout (name, metric, op, threshold), stored in batches.options like it does.
RULES: tuple[dict[str, object], ...] = (
    {"name": "customer_negative_streak", "metric": "longest_negative_streak_s", "op": ">=",
     "threshold": 20.0, "description": "customer negative for 20 s in a row"},
    {"name": "customer_worsening", "metric": "customer_trend", "op": ">=", "threshold": 0.5,
     "description": "customer much more negative at the end than at the start"},
    {"name": "customer_negative_share", "metric": "negative_share_customer", "op": ">=",
     "threshold": 0.7, "description": "customer negative for most of their speech"},
)


def _summary(call_id: int, model_version_id: int, duration: float, segs: list[dict[str, object]],
             classes: Sequence[str]) -> dict[str, object]:
    def talk(role: str) -> float:
        return sum(float(s["end_s"]) - float(s["start_s"]) for s in segs if s["role"] == role)  # type: ignore[arg-type]

    def neg_share(role: str, lo: float = 0.0, hi: float = 1e9) -> float | None:
        rs = [s for s in segs if s["role"] == role and lo <= float(s["start_s"]) < hi]  # type: ignore[arg-type]
        total = sum(float(s["end_s"]) - float(s["start_s"]) for s in rs)  # type: ignore[arg-type]
        if total <= 0:
            return None
        return sum(float(s["end_s"]) - float(s["start_s"]) for s in rs if s["is_negative"]) / total  # type: ignore[arg-type]

    grid = np.zeros(int(duration * 10) + 1, dtype=np.int8)
    for s in segs:
        lo, hi = int(float(s["start_s"]) * 10), int(float(s["end_s"]) * 10)  # type: ignore[arg-type]
        grid[lo:hi] += 1
    best = 0.0
    run_start: float | None = None
    run_end = 0.0
    for seg in (x for x in segs if x["role"] == "customer"):
        start, end = float(seg["start_s"]), float(seg["end_s"])  # type: ignore[arg-type]
        if seg["is_negative"] and run_start is not None and start - run_end <= STREAK_GAP_S:
            run_end = end
        elif seg["is_negative"]:
            run_start, run_end = start, end
        else:
            run_start = None
        if run_start is not None:
            best = max(best, run_end - run_start)
    first = neg_share("customer", 0, duration / 3)
    last = neg_share("customer", 2 * duration / 3)
    cust = neg_share("customer")
    values = {"negative_share_customer": cust, "longest_negative_streak_s": best,
              "customer_trend": (last - first) if first is not None and last is not None else None}
    rule = reason = None
    fired = [r for r in RULES if values[str(r["metric"])] is not None
             and float(values[str(r["metric"])]) >= float(r["threshold"])]  # type: ignore[arg-type]
    if fired:
        rule = str(fired[0]["name"])
        reason = "; ".join(f"{r['metric']} = {float(values[str(r['metric'])]):.3g} >= "  # type: ignore[arg-type]
                           f"{r['threshold']:g} ({r['description']})" for r in fired)
    mix: dict[str, dict[str, float]] = {}
    for role in ("agent", "customer"):
        total = talk(role) or 1.0
        mix[role] = {c: round(sum(float(s["end_s"]) - float(s["start_s"]) for s in segs  # type: ignore[arg-type]
                                  if s["role"] == role and s["emotion"] == c) / total, 4)
                     for c in classes}
    return {
        "call_id": call_id, "model_version_id": model_version_id, "duration_s": duration,
        "talk_agent_s": talk("agent"), "talk_customer_s": talk("customer"),
        "silence_share": float((grid == 0).mean()), "overtalk_share": float((grid >= 2).mean()),
        "negative_share_agent": neg_share("agent"), "negative_share_customer": cust,
        "longest_negative_streak_s": best, "customer_negative_first_third": first,
        "customer_negative_last_third": last,
        "customer_trend": (last - first) if first is not None and last is not None else None,
        "emotion_mix": mix, "escalated": rule is not None, "escalation_rule": rule,
        "escalation_reason": reason,
    }
