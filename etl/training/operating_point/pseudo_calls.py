"""Customer sides made of clip predictions: the operating point's producer when no call can be
generated (``operating_point_calls`` 0, studio models, the clips' audio gone).

Each pseudo-call is one training speaker as the customer over ``minutes`` (the generator's
length and jitter, :class:`etl.synthetic.CallGenConfig`), following one of the generator's
scenarios (calm, escalating, upset, recovering, with its weights); each customer turn is 1-3 of
that speaker's clips of one polarity, negative with the scenario's early or late share. The
clips' predictions come from ``predict``: for a speaker-normalised model, each pseudo-call's
clips normalised together as scoring normalises a call's role (clip predictions normalised over a
speaker's balanced set of clips would be optimistic), by the fold model that never saw the
speaker.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from etl.corpora.labels import ESCALATED_SHARE, NEGATIVE_EMOTIONS, is_negative_class
from etl.synthetic import SCENARIO_WEIGHTS, SCENARIOS, CallGenConfig
from etl.training.operating_point.selection import CustomerSide

PER_SPEAKER = 30
# Stand-ins for what the generator takes from the clips themselves: the customer's utterance
# (a clip) and the agent's turn between customer turns; and the call's first words.
UTTERANCE_S = (1.2, 3.0)
AGENT_TURN_S = (2.0, 8.0)
FIRST_WORDS_S = (1.0, 6.0)
# The generator's soft switch from a scenario's early to its late emotions: none before 30 % of
# the call, all after 70 % (etl.synthetic.calls).
SWITCH = (0.3, 0.4)

# ``predict(rows, call)``: calibrated probabilities (n, n_classes) of the clips ``rows`` (n,),
# each pseudo-call's clips (``call`` (n,)) normalised together as one speaker.
Predict = Callable[[np.ndarray, np.ndarray], np.ndarray]


def pseudo_call_sides(y: np.ndarray, *, classes: Sequence[str], groups: np.ndarray,
                      folds: np.ndarray, predict: Predict, seed: int, minutes: float = 2.0,
                      per_speaker: int = PER_SPEAKER) -> list[CustomerSide]:
    """``per_speaker`` pseudo-calls per speaker with clips of both polarities; ``y``,
    ``groups``, ``folds`` (n_clips,): class, speaker and outer fold of each clip."""
    negative_class = np.array([is_negative_class(c) for c in classes])
    true_negative = negative_class[y]
    names = list(SCENARIO_WEIGHTS)
    p = np.array([SCENARIO_WEIGHTS[n] for n in names])
    p = p / p.sum()
    share = {n: tuple(sum(e in NEGATIVE_EMOTIONS for e in pool) / len(pool)
                      for pool in SCENARIOS[n]) for n in names}
    jitter = CallGenConfig().duration_jitter
    length_s = (minutes * 60.0 * (1.0 - jitter), minutes * 60.0 * (1.0 + jitter))
    rng = np.random.default_rng(seed)
    calls: list[tuple[int, str, float, bool, np.ndarray, np.ndarray]] = []
    for speaker in np.unique(groups):
        rows = np.flatnonzero(groups == speaker)
        pools = (rows[~true_negative[rows]], rows[true_negative[rows]])
        if not len(pools[0]) or not len(pools[1]):
            continue
        for _ in range(per_speaker):
            scenario = names[int(rng.choice(len(names), p=p))]
            duration = float(rng.uniform(*length_s))
            times, picks = _timeline(rng, duration=duration, negative=share[scenario],
                                     pools=pools)
            if len(picks):
                span = times[:, 1] - times[:, 0]
                truth = bool(span[true_negative[picks]].sum() > ESCALATED_SHARE * span.sum())
                calls.append((int(speaker), scenario, duration, truth, times, picks))
    if not calls:
        return []
    rows = np.concatenate([c[5] for c in calls])
    call = np.concatenate([np.full(len(c[5]), i) for i, c in enumerate(calls)])
    proba = np.asarray(predict(rows, call), dtype=np.float64)
    if proba.shape != (len(rows), len(classes)):
        raise ValueError(f"predict gave shape {proba.shape} for {len(rows)} rows of "
                         f"{len(classes)} classes")
    negative, confidence = negative_class[proba.argmax(axis=1)], proba.max(axis=1)
    ends = np.cumsum([len(c[5]) for c in calls])
    return [CustomerSide(speaker=speaker, scenario=scenario, duration_s=duration, truth=truth,
                         start=times[:, 0], end=times[:, 1], fold=int(folds[picks[0]]),
                         negative=negative[end - len(picks):end],
                         confidence=confidence[end - len(picks):end])
            for (speaker, scenario, duration, truth, times, picks), end in zip(calls, ends,
                                                                               strict=True)]


def _timeline(rng: np.random.Generator, *, duration: float, negative: tuple[float, float],
              pools: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """The customer's utterances ``(start, end)`` and the clip row of each, laid out as the
    generator lays out turns (:class:`CallGenConfig` utterances per turn and gaps);
    ``negative``: the chance a turn is negative before and after the switch."""
    config = CallGenConfig()
    low, high = config.utterances_per_turn
    times: list[tuple[float, float]] = []
    picks: list[int] = []
    t = float(rng.uniform(*FIRST_WORDS_S))
    while True:
        late = rng.random() < np.clip((t / duration - SWITCH[0]) / SWITCH[1], 0.0, 1.0)
        pool = pools[int(rng.random() < negative[int(late)])]
        for _k in range(int(rng.integers(low, high + 1))):
            length = float(rng.uniform(*UTTERANCE_S))
            if t + length > duration:
                break
            times.append((t, t + length))
            picks.append(int(pool[rng.integers(len(pool))]))
            t += length + float(rng.uniform(*config.in_turn_gap_s))
        t += float(rng.uniform(*AGENT_TURN_S))
        if t >= duration - UTTERANCE_S[0]:
            break
    return np.array(times), np.array(picks, dtype=np.int64)
