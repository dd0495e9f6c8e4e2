"""A generated call's ground truth: one event per utterance or non-speech sound, as CSV.

Every utterance is an event with its role, start, end and emotion (``kind = speech``); every
non-speech event has the role of the channel it is on, an empty emotion and its ``kind``, so VAD
and scoring can be measured against it. Line noise is everywhere, so it has no event.

**How the truth treats IVR prompts.** A prompt is speech to the ear, but it is neither the agent
nor the customer, so it is *not a turn*: a scored segment on it is a false accept of kind ``ivr``.
It is reported apart from the other kinds because an acoustic VAD cannot be expected to reject
it (it is speech); it is rejected, if at all, by its level or position, not by speech-ness.

A timeline file (``call_0001.timeline.csv``) has the columns
``role,start_s,end_s,emotion,actor,clip,kind``; timelines written before ``kind`` existed (six
columns) read as all speech.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from etl.corpora.labels import ESCALATED_SHARE, NEGATIVE_EMOTIONS

SPEECH = "speech"
NONSPEECH_KINDS: tuple[str, ...] = ("ringback", "ivr", "dtmf", "hold", "babble")
KINDS: tuple[str, ...] = (SPEECH, *NONSPEECH_KINDS)
TIMELINE_COLUMNS: tuple[str, ...] = ("role", "start_s", "end_s", "emotion", "actor", "clip", "kind")


@dataclass(frozen=True, slots=True)
class TimelineEvent:
    """Ground truth for one utterance (``kind = "speech"``) or non-speech event in a call.

    ``role`` is the speaker for speech and the channel's role for non-speech (whose ``emotion``
    is empty and ``actor`` 0); ``clip`` names the clip or describes the event.
    """

    role: str
    start_s: float
    end_s: float
    emotion: str
    actor: int
    clip: str
    kind: str = SPEECH

    @property
    def is_speech(self) -> bool:
        return self.kind == SPEECH


def customer_negative_share(timeline: Iterable[TimelineEvent]) -> float:
    """Share of the customer's speech time whose emotion is negative (0 without customer speech).

    A call is *truly escalated* when this exceeds 0.5 (:data:`ESCALATED_SHARE`): the truth the
    escalation operating point is chosen against and the calls benchmark counts against.
    """
    total = negative = 0.0
    for event in speech_events(timeline, role="customer"):
        length = event.end_s - event.start_s
        total += length
        negative += length if event.emotion in NEGATIVE_EMOTIONS else 0.0
    return negative / total if total > 0 else 0.0


def truly_escalated(timeline: Iterable[TimelineEvent]) -> bool:
    return customer_negative_share(timeline) > ESCALATED_SHARE


def speech_events(timeline: Iterable[TimelineEvent], *,
                  role: str | None = None) -> list[TimelineEvent]:
    """The utterances of a timeline (of one ``role`` if given), without non-speech events."""
    return [e for e in timeline if e.is_speech and (role is None or e.role == role)]




def write_timeline(path: Path, timeline: Sequence[TimelineEvent]) -> None:
    """One CSV row per event, columns :data:`TIMELINE_COLUMNS` (``kind`` last, so readers of
    the six-column format still find theirs)."""
    with Path(path).open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(TIMELINE_COLUMNS)
        for e in timeline:
            writer.writerow([e.role, f"{e.start_s:.3f}", f"{e.end_s:.3f}", e.emotion, e.actor,
                             e.clip, e.kind])


def read_timeline(path: Path) -> list[TimelineEvent]:
    """Inverse of :func:`write_timeline`; a timeline without a ``kind`` column (written before
    non-speech existed) is all speech."""
    events: list[TimelineEvent] = []
    with Path(path).open(newline="") as handle:
        reader = csv.DictReader(handle)
        missing = {"role", "start_s", "end_s"} - set(reader.fieldnames or ())
        if missing:
            raise ValueError(f"{path} is not a call timeline: no {', '.join(sorted(missing))} "
                             f"column (expected {','.join(TIMELINE_COLUMNS)})")
        for line, r in enumerate(reader, start=2):
            kind = r.get("kind") or SPEECH
            if kind not in KINDS:
                raise ValueError(f"{path} line {line}: unknown kind {kind!r}; "
                                 f"known: {', '.join(KINDS)}")
            try:
                events.append(TimelineEvent(r["role"], float(r["start_s"]), float(r["end_s"]),
                                            r.get("emotion") or "", int(r.get("actor") or 0),
                                            r.get("clip") or "", kind))
            except ValueError as exc:
                raise ValueError(f"{path} line {line}: {exc}") from None
    return events
