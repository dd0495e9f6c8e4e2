"""Per-call summaries from scored segments and speech regions (pure functions, no database).

Definitions (all durations in seconds; shares in [0, 1]):

- talk time per role: total VAD speech of that role (also the short bursts that are not scored).
- silence share: share of the call where nobody speaks.
- overtalk share: share of the call where both roles speak at once.
- emotion mix per role: share of the role's *scored* speech time per predicted emotion.
- negative share per role: share of the role's scored speech time predicted negative
  (None when the role has no scored segment).
- longest negative streak: the longest stretch of consecutive customer segments that are all
  negative, from the first one's start to the last one's end; consecutive means no customer
  segment of another emotion in between and a gap of at most ``streak_gap_s``.
- customer trend: customer negative share (time-weighted) in the last third of the call minus the
  first third; > 0 means the customer got more negative. None if the customer has no scored speech
  in either third.
- abstained segments: scored windows whose confidence is below the model's confidence floor.
  They are kept (with their emotion) but do not count in any of the emotion numbers above:
  neither negative nor in the denominators, and they neither extend nor break a streak.
- customer scored share (coverage): share of the customer's detected speech covered by scored
  windows (abstained included); None without customer speech.
- customer confidence mean: time-weighted mean confidence of the customer's scored windows
  (abstained included); None without a scored customer window.
- customer abstained share: share of the customer's scored time that was abstained.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from etl.audio.intervals import Region, intersect_regions, overlap, total_length, union_regions


@dataclass(frozen=True, slots=True)
class ScoredSegment:
    """One scored window of speech (``probabilities`` maps class -> probability)."""

    role: str
    start_s: float
    end_s: float
    emotion: str
    confidence: float
    is_negative: bool
    probabilities: Mapping[str, float] = field(default_factory=dict)
    abstained: bool = False

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s


@dataclass(frozen=True, slots=True)
class SummaryStats:
    """Mirrors the numeric columns of ``call_summaries`` (without escalation fields)."""

    duration_s: float
    talk_agent_s: float
    talk_customer_s: float
    silence_share: float
    overtalk_share: float
    negative_share_agent: float | None
    negative_share_customer: float | None
    longest_negative_streak_s: float
    customer_negative_first_third: float | None
    customer_negative_last_third: float | None
    customer_trend: float | None
    emotion_mix: dict[str, dict[str, float]]
    customer_scored_share: float | None = None
    customer_confidence_mean: float | None = None
    customer_abstained_share: float | None = None

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def _overlap(segment: ScoredSegment, start: float, end: float) -> float:
    return overlap((segment.start_s, segment.end_s), (start, end))


def negative_share(segments: Sequence[ScoredSegment], *, start: float = 0.0,
                   end: float = float("inf")) -> float | None:
    """Time-weighted share of negative speech among ``segments`` within ``[start, end)``."""
    total = sum(_overlap(s, start, end) for s in segments)
    if total <= 0:
        return None
    return sum(_overlap(s, start, end) for s in segments if s.is_negative) / total


def longest_negative_streak(segments: Sequence[ScoredSegment], *,
                            gap_s: float = 2.0) -> float:
    """Longest run of consecutive negative segments (first start to last end), seconds."""
    best = 0.0
    run_start: float | None = None
    run_end = 0.0
    for seg in sorted(segments, key=lambda s: s.start_s):
        if seg.is_negative and run_start is not None and seg.start_s - run_end <= gap_s:
            run_end = max(run_end, seg.end_s)
        elif seg.is_negative:
            run_start, run_end = seg.start_s, seg.end_s
        else:
            run_start = None
        if run_start is not None:
            best = max(best, run_end - run_start)
    return best


def emotion_mix(segments: Sequence[ScoredSegment]) -> dict[str, float]:
    """Share of scored time per predicted emotion (sums to 1; empty when no segments)."""
    totals: dict[str, float] = {}
    for seg in segments:
        totals[seg.emotion] = totals.get(seg.emotion, 0.0) + seg.duration_s
    whole = sum(totals.values())
    return {k: round(v / whole, 4) for k, v in sorted(totals.items())} if whole > 0 else {}


def summarise_call(
    segments: Sequence[ScoredSegment],
    *,
    speech: Mapping[str, Sequence[Region]],
    duration_s: float,
    streak_gap_s: float = 2.0,
) -> SummaryStats:
    """Summary numbers of one call.

    Parameters
    ----------
    segments
        scored windows of all roles.
    speech
        VAD speech regions per role (``{"agent": [...], "customer": [...]}``); roles absent
        (a mono call) count as silent.
    duration_s
        call length.
    """
    if duration_s <= 0:
        raise ValueError("duration_s must be positive")
    by_role: dict[str, list[ScoredSegment]] = {}
    for seg in segments:
        if not seg.abstained:
            by_role.setdefault(seg.role, []).append(seg)
    all_cust = [seg for seg in segments if seg.role == "customer"]
    agent = union_regions(speech.get("agent", ()))
    customer = union_regions(speech.get("customer", ()))
    anyone = union_regions([*agent, *customer, *(r for role, regs in speech.items()
                                                  if role not in ("agent", "customer")
                                                  for r in regs)])
    both = intersect_regions(agent, customer)
    cust = by_role.get("customer", [])
    third = duration_s / 3.0
    first = negative_share(cust, start=0.0, end=third)
    last = negative_share(cust, start=2 * third, end=duration_s + 1e-6)
    return SummaryStats(
        duration_s=round(duration_s, 3),
        talk_agent_s=round(total_length(agent), 3),
        talk_customer_s=round(total_length(customer), 3),
        silence_share=round(float(np.clip(1.0 - total_length(anyone) / duration_s, 0.0, 1.0)), 4),
        overtalk_share=round(float(np.clip(total_length(both) / duration_s, 0.0, 1.0)), 4),
        negative_share_agent=round_or_none(negative_share(by_role.get("agent", []))),
        negative_share_customer=round_or_none(negative_share(cust)),
        longest_negative_streak_s=round(longest_negative_streak(cust, gap_s=streak_gap_s), 3),
        customer_negative_first_third=round_or_none(first),
        customer_negative_last_third=round_or_none(last),
        customer_trend=round_or_none(last - first) if first is not None and last is not None else None,
        emotion_mix={role: emotion_mix(segs) for role, segs in sorted(by_role.items())},
        **coverage_stats(all_cust, speech=customer),
    )


def coverage_stats(segments: Sequence[ScoredSegment], *,
                   speech: Sequence[Region]) -> dict[str, float | None]:
    """Coverage, mean confidence and abstained share of one role's scored windows.

    ``segments`` are the role's scored windows (abstained included); ``speech`` its merged VAD
    regions. Keys are the ``customer_*`` fields of :class:`SummaryStats`.
    """
    talk = total_length(speech)
    scored = total_length(intersect_regions(union_regions((s.start_s, s.end_s) for s in segments),
                                       speech))
    weight = sum(s.duration_s for s in segments)
    return {
        "customer_scored_share": round_or_none(min(scored / talk, 1.0)) if talk > 0 else None,
        "customer_confidence_mean": round_or_none(sum(s.confidence * s.duration_s for s in segments)
                                           / weight) if weight > 0 else None,
        "customer_abstained_share": round_or_none(sum(s.duration_s for s in segments if s.abstained)
                                           / weight) if weight > 0 else None,
    }


def round_or_none(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(float(value), digits)
