"""Conversation metrics of one call from its VAD regions, scored segments and frame energies
(pure functions, no database, no audio decoding).

Everything is computed from what scoring already has: the per-role speech regions of the VAD,
the scored segments and the per-frame band energy (dBFS, 300-3400 Hz) of each role's channel
(:attr:`etl.audio.vad.FrameAnalyser.energy_db`). Definitions (seconds; shares in [0, 1]):

- **quarter negative share** per role: the role's negative share (as in
  :mod:`etl.scoring.summaries`, abstained segments left out) within each quarter of the call; None
  where the role has no scored speech in that quarter.
- **turn**: a role's speech from its first region until it pauses for ``turn_gap_s`` or more,
  or until another role takes the floor in its pause (starts speaking in it and has stopped
  again when the first role resumes). Another role that starts during the turn, or in a pause
  and is still speaking when the first role resumes, talks over it: the turn goes on. Turn
  length runs from its first speech to its last, pauses within included.
- **agent response latency**: mean gap from the end of a customer turn to the start of the
  agent turn right after it, over the gaps that are positive (an agent who starts before the
  customer has finished is an interruption, not a fast answer).
- **interruption**: a turn that starts while another role's turn is under way (strictly inside
  it, its pauses included) and lasts at least ``min_interruption_s``. Its role is the
  interrupting role; its span runs from its start to the end of the interrupted turn (or of the
  interruption, if sooner): the overlap seconds.
- **long silence**: a stretch of ``min_silence_s`` or more where no role speaks, the call's
  start and end included (ringing, hold music and dead air all count: the VAD rejects tones and
  music).
- **loudness** per role: energy-weighted (power) mean of the frame energy over the role's
  speech frames, in dBFS of the telephone band. It is a level, not LUFS: no K-weighting or
  gating (pyloudnorm would need the audio decoded a second time; the VAD's speech frames
  already do the gating's job of leaving pauses out).
  **Loudness change**: the level in the last third of the call minus the first third (dB;
  > 0: the role got louder). Per turn, the same level over the turn's speech frames.
- **speaking rate** per role: a *proxy* for syllables per second: peaks of the smoothed frame
  energy (at least ``syllable_prominence_db`` above the dips around them, at least
  ``syllable_min_gap_s`` apart) per second of the role's speech. It counts energy nuclei, not
  linguistic syllables; compare it between calls, agents and emotions, not with a transcript.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from itertools import pairwise

import numpy as np
from scipy.signal import find_peaks

from etl.audio.intervals import Region, union_regions
from etl.scoring.summaries import ScoredSegment, negative_share, round_or_none

ROLES: tuple[str, str] = ("agent", "customer")
EVENT_KINDS: tuple[str, ...] = ("turn", "interruption", "silence")


@dataclass(frozen=True, slots=True)
class MetricsConfig:
    """Thresholds of the conversation metrics (seconds unless said otherwise)."""

    turn_gap_s: float = 1.0
    min_interruption_s: float = 0.3
    min_silence_s: float = 2.0
    # The 32 ms analysis frame already smooths the envelope; a wider window merges the
    # syllables of fast speech (docs/analytics.md has the figures).
    syllable_smooth_s: float = 0.02
    syllable_prominence_db: float = 3.0
    syllable_min_gap_s: float = 0.1  # at most 10 peaks per second

    def __post_init__(self) -> None:
        if min(self.turn_gap_s, self.min_silence_s, self.syllable_smooth_s) <= 0:
            raise ValueError("MetricsConfig: turn_gap_s, min_silence_s and syllable_smooth_s "
                             "must be positive")


@dataclass(frozen=True, slots=True)
class Turn:
    """One role holding the floor from ``start_s`` to ``end_s``."""

    role: str
    start_s: float
    end_s: float

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s


@dataclass(frozen=True, slots=True)
class CallEvent:
    """One row of ``call_events``: a turn, an interruption or a long silence.

    ``value`` is the turn's loudness (dBFS; None without energy frames), the interruption's
    overlap seconds, or the silence's length in seconds. ``role`` is None for a silence.
    """

    role: str | None
    kind: str
    start_s: float
    end_s: float
    value: float | None


@dataclass(frozen=True, slots=True)
class CallMetrics:
    """Mirrors the conversation-metric columns of ``call_summaries``."""

    negative_share_agent_q1: float | None
    negative_share_agent_q2: float | None
    negative_share_agent_q3: float | None
    negative_share_agent_q4: float | None
    negative_share_customer_q1: float | None
    negative_share_customer_q2: float | None
    negative_share_customer_q3: float | None
    negative_share_customer_q4: float | None
    turns_agent: int
    turns_customer: int
    turn_mean_agent_s: float | None
    turn_mean_customer_s: float | None
    turn_longest_agent_s: float | None
    turn_longest_customer_s: float | None
    agent_response_latency_s: float | None
    interruptions_by_agent: int
    interruptions_by_customer: int
    interruption_overlap_s: float
    long_silence_count: int
    long_silence_s: float
    long_silence_longest_s: float | None
    loudness_agent_dbfs: float | None
    loudness_customer_dbfs: float | None
    loudness_change_agent_db: float | None
    loudness_change_customer_db: float | None
    speaking_rate_agent: float | None
    speaking_rate_customer: float | None

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class RoleEnergy:
    """Per-frame band energy of one role's channel.

    Attributes
    ----------
    energy_db
        float ``(n_frames,)`` dBFS per frame (:attr:`etl.audio.vad.FrameAnalyser.energy_db`).
    hop_s, frame_s
        frame ``i`` covers ``[i * hop_s, i * hop_s + frame_s)``.
    """

    energy_db: np.ndarray
    hop_s: float
    frame_s: float

    @property
    def times(self) -> np.ndarray:
        """float64 ``(n_frames,)`` frame centres in seconds."""
        return np.arange(len(self.energy_db)) * self.hop_s + self.frame_s / 2.0


# --------------------------------------------------------------------------------------------
# Emotion per quarter
# --------------------------------------------------------------------------------------------


def quarter_negative_shares(segments: Sequence[ScoredSegment], *,
                            duration_s: float) -> dict[str, float | None]:
    """Negative share per role and quarter, keyed ``negative_share_{role}_q{1..4}``.

    Abstained segments do not count (as in :func:`etl.scoring.summaries.summarise_call`).
    """
    quarter = duration_s / 4.0
    out: dict[str, float | None] = {}
    for role in ROLES:
        mine = [s for s in segments if s.role == role and not s.abstained]
        for k in range(4):
            end = (k + 1) * quarter if k < 3 else duration_s + 1e-6
            out[f"negative_share_{role}_q{k + 1}"] = round_or_none(
                negative_share(mine, start=k * quarter, end=end))
    return out


# --------------------------------------------------------------------------------------------
# Turns, response latency, interruptions, silences
# --------------------------------------------------------------------------------------------


def find_turns(speech: Mapping[str, Sequence[Region]], *, gap_s: float = 1.0) -> list[Turn]:
    """Turns of all roles, sorted by start.

    A role's next speech region continues its turn when the pause before it is shorter than
    ``gap_s`` and no other role took the floor in the pause: started a region in it that ended
    before this one starts. (Whoever is still speaking then is talking over the turn.)
    """
    spurts = sorted((start, end, role) for role, regions in speech.items()
                    for start, end in union_regions(regions))
    open_turns: dict[str, list[float]] = {}
    latest: dict[str, Region] = {}  # each role's latest region so far
    turns: list[Turn] = []
    for start, end, role in spurts:
        current = open_turns.get(role)
        floor_taken = current is not None and any(
            r != role and current[1] < s and e <= start for r, (s, e) in latest.items())
        if current is not None and start - current[1] < gap_s and not floor_taken:
            current[1] = max(current[1], end)
        else:
            if current is not None:
                turns.append(Turn(role, current[0], current[1]))
            open_turns[role] = [start, end]
        latest[role] = (start, end)
    turns.extend(Turn(role, s, e) for role, (s, e) in open_turns.items())
    return sorted(turns, key=lambda t: (t.start_s, t.role))


def turn_stats(turns: Sequence[Turn], *,
               role: str) -> tuple[int, float | None, float | None]:
    """``(count, mean length, longest length)`` of ``role``'s turns (None, None without any)."""
    lengths = [t.duration_s for t in turns if t.role == role]
    if not lengths:
        return 0, None, None
    return len(lengths), round_or_none(float(np.mean(lengths)), 3), round_or_none(max(lengths), 3)


def response_latency(turns: Sequence[Turn], *, responder: str = "agent",
                     to: str = "customer") -> float | None:
    """Mean positive gap from the end of a ``to`` turn to the ``responder`` turn right after.

    ``turns`` sorted by start (as :func:`find_turns` returns them); None when no such pair.
    """
    gaps = [nxt.start_s - prev.end_s for prev, nxt in pairwise(turns)
            if prev.role == to and nxt.role == responder and nxt.start_s > prev.end_s]
    return round_or_none(float(np.mean(gaps)), 3) if gaps else None


def find_interruptions(turns: Sequence[Turn], *, min_s: float = 0.3) -> list[CallEvent]:
    """Turns that start strictly inside another role's turn and last ``min_s`` or more.

    Each event has the interrupting role and spans the overlap (start of the interruption to
    the end of the interrupted turn, or of the interruption if sooner); value = its seconds.
    ``turns`` sorted by start. A role's turns do not overlap, so the only turn of a role that
    can be under way is its latest one.
    """
    latest: dict[str, Turn] = {}
    events: list[CallEvent] = []
    for turn in turns:
        if turn.duration_s >= min_s:
            held = [u for role, u in latest.items()
                    if role != turn.role and u.start_s < turn.start_s < u.end_s]
            if held:
                end = min(max(u.end_s for u in held), turn.end_s)
                events.append(CallEvent(turn.role, "interruption", round(turn.start_s, 3),
                                        round(end, 3), round(end - turn.start_s, 3)))
        latest[turn.role] = turn
    return events


def find_silences(speech: Mapping[str, Sequence[Region]], *, duration_s: float,
                  min_s: float = 2.0) -> list[CallEvent]:
    """Stretches of at least ``min_s`` where no role speaks, within ``[0, duration_s]``."""
    anyone = union_regions(r for regions in speech.values() for r in regions)
    bounds = [0.0, *(x for region in anyone for x in region), duration_s]
    events: list[CallEvent] = []
    for start, end in zip(bounds[::2], bounds[1::2], strict=True):
        start, end = max(start, 0.0), min(end, duration_s)
        if end - start >= min_s:
            events.append(CallEvent(None, "silence", round(start, 3), round(end, 3),
                                    round(end - start, 3)))
    return events


# --------------------------------------------------------------------------------------------
# Loudness and speaking rate from the frame energies
# --------------------------------------------------------------------------------------------


def speech_frames(energy: RoleEnergy, regions: Sequence[Region]) -> np.ndarray:
    """bool ``(n_frames,)``: frames whose centre lies in one of ``regions``."""
    merged = union_regions(regions)
    if not merged or not len(energy.energy_db):
        return np.zeros(len(energy.energy_db), dtype=bool)
    starts = np.array([s for s, _ in merged])
    ends = np.array([e for _, e in merged])
    times = energy.times
    index = np.searchsorted(starts, times, side="right") - 1
    return (index >= 0) & (times < ends[np.maximum(index, 0)])


def power_mean_db(energy_db: np.ndarray) -> float | None:
    """Energy-weighted mean level (dB) of ``energy_db`` frames; None when empty."""
    if not len(energy_db):
        return None
    peak = float(np.max(energy_db))  # factored out so that quiet frames do not underflow
    return peak + 10.0 * float(np.log10(np.mean(10.0 ** ((energy_db - peak) / 10.0))))


def loudness(energy: RoleEnergy, mask: np.ndarray, *,
             duration_s: float) -> tuple[float | None, float | None]:
    """``(level dBFS, last third minus first third dB)`` of the speech frames in ``mask``."""
    level = power_mean_db(energy.energy_db[mask])
    times = energy.times
    third = duration_s / 3.0
    first = power_mean_db(energy.energy_db[mask & (times < third)])
    last = power_mean_db(energy.energy_db[mask & (times >= 2 * third)])
    change = last - first if first is not None and last is not None else None
    return round_or_none(level, 2), round_or_none(change, 2)


def turn_levels(energy: RoleEnergy | None, mask: np.ndarray,
                turns: Sequence[Turn]) -> list[float | None]:
    """Loudness (dBFS) of each turn's speech frames (None without frames)."""
    if energy is None or not len(energy.energy_db):
        return [None] * len(turns)
    power = np.where(mask, 10.0 ** (energy.energy_db.astype(np.float64) / 10.0), 0.0)
    cum_power = np.concatenate([[0.0], np.cumsum(power)])
    cum_count = np.concatenate([[0], np.cumsum(mask)])
    times = energy.times
    levels: list[float | None] = []
    for turn in turns:
        i0, i1 = np.searchsorted(times, [turn.start_s, turn.end_s])
        count = cum_count[i1] - cum_count[i0]
        total = cum_power[i1] - cum_power[i0]
        levels.append(round(10.0 * float(np.log10(total / count)), 2)
                      if count and total > 0 else None)
    return levels


def speaking_rate(energy: RoleEnergy, mask: np.ndarray, *,
                  config: MetricsConfig = MetricsConfig()) -> float | None:
    """Syllable-rate proxy: energy peaks per second of speech (see the module docstring)."""
    speech_s = float(mask.sum()) * energy.hop_s
    if speech_s <= 0:
        return None
    width = max(round(config.syllable_smooth_s / energy.hop_s), 1)
    power = 10.0 ** (energy.energy_db.astype(np.float64) / 10.0)
    smoothed = 10.0 * np.log10(np.convolve(power, np.ones(width) / width, mode="same") + 1e-20)
    peaks, _ = find_peaks(smoothed, prominence=config.syllable_prominence_db,
                          distance=max(round(config.syllable_min_gap_s / energy.hop_s), 1))
    return round_or_none(float(mask[peaks].sum()) / speech_s, 2)


# --------------------------------------------------------------------------------------------
# One call
# --------------------------------------------------------------------------------------------


def compute_call_metrics(
    segments: Sequence[ScoredSegment],
    *,
    speech: Mapping[str, Sequence[Region]],
    energy: Mapping[str, RoleEnergy],
    duration_s: float,
    config: MetricsConfig = MetricsConfig(),
) -> tuple[CallMetrics, list[CallEvent]]:
    """Conversation metrics and event rows of one call.

    Parameters
    ----------
    segments
        scored windows of all roles (abstained ones are left out of the quarter shares).
    speech
        VAD speech regions per role, as :func:`etl.scoring.summaries.summarise_call` receives them.
    energy
        per-role frame energies; a role without an entry gets no loudness or rate.
    duration_s
        call length.

    Returns
    -------
    (metrics, events)
        events sorted by start: one ``turn`` per turn, one ``interruption`` per interruption and
        one ``silence`` per long silence.
    """
    if duration_s <= 0:
        raise ValueError("duration_s must be positive")
    turns = find_turns(speech, gap_s=config.turn_gap_s)
    interruptions = find_interruptions(turns, min_s=config.min_interruption_s)
    silences = find_silences(speech, duration_s=duration_s, min_s=config.min_silence_s)
    masks = {role: speech_frames(e, speech.get(role, ())) for role, e in energy.items()}
    level: dict[str, float | None] = {}
    change: dict[str, float | None] = {}
    rate: dict[str, float | None] = {}
    for role in ROLES:
        e = energy.get(role)
        level[role], change[role] = (loudness(e, masks[role], duration_s=duration_s)
                                     if e is not None else (None, None))
        rate[role] = speaking_rate(e, masks[role], config=config) if e is not None else None
    stats = {role: turn_stats(turns, role=role) for role in ROLES}
    metrics = CallMetrics(
        **quarter_negative_shares(segments, duration_s=duration_s),  # type: ignore[arg-type]
        turns_agent=stats["agent"][0], turns_customer=stats["customer"][0],
        turn_mean_agent_s=stats["agent"][1], turn_mean_customer_s=stats["customer"][1],
        turn_longest_agent_s=stats["agent"][2], turn_longest_customer_s=stats["customer"][2],
        agent_response_latency_s=response_latency(turns),
        interruptions_by_agent=sum(e.role == "agent" for e in interruptions),
        interruptions_by_customer=sum(e.role == "customer" for e in interruptions),
        interruption_overlap_s=round(sum(e.value or 0.0 for e in interruptions), 3),
        long_silence_count=len(silences),
        long_silence_s=round(sum(e.value or 0.0 for e in silences), 3),
        long_silence_longest_s=max((e.value or 0.0 for e in silences), default=None),
        loudness_agent_dbfs=level["agent"], loudness_customer_dbfs=level["customer"],
        loudness_change_agent_db=change["agent"], loudness_change_customer_db=change["customer"],
        speaking_rate_agent=rate["agent"], speaking_rate_customer=rate["customer"])
    return metrics, _events(turns, interruptions, silences, energy=energy, masks=masks)


def _events(turns: Sequence[Turn], interruptions: Sequence[CallEvent],
            silences: Sequence[CallEvent], *, energy: Mapping[str, RoleEnergy],
            masks: Mapping[str, np.ndarray]) -> list[CallEvent]:
    """Turn rows (with their loudness), interruptions and silences, sorted by start."""
    rows: list[CallEvent] = [*interruptions, *silences]
    for role in sorted({t.role for t in turns}):
        mine = [t for t in turns if t.role == role]
        e = energy.get(role)
        levels = turn_levels(e, masks[role], mine) if e is not None else [None] * len(mine)
        rows.extend(CallEvent(role, "turn", round(t.start_s, 3), round(t.end_s, 3), v)
                    for t, v in zip(mine, levels, strict=True))
    return sorted(rows, key=lambda r: (r.start_s, EVENT_KINDS.index(r.kind), r.role or ""))

