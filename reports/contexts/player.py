"""The call report's player: the recording in an ``<audio>`` element (no JavaScript), one
media-fragment link (``#t=start,end``) per flagged stretch, which channel is the customer,
whether the file is reachable from where the report was written, and optionally a short
excerpt of the flagged stretch embedded in the page for reports that travel without the
recordings (off by default: it copies call audio into the report)."""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import soundfile as sf

from etl.audio.decode import load_audio

# Customer negative segments closer than this are one stretch to listen to.
STRETCH_GAP_S = 2.0
# Shorter negative stretches are not worth a link of their own.
MIN_STRETCH_S = 3.0
MAX_STRETCHES = 8
# An embedded excerpt stays short: the report is for reading, not an archive of calls.
MAX_EXCERPT_S = 30.0


@dataclass(frozen=True)
class Stretch:
    start_s: float
    end_s: float
    what: str
    fragment: str  # "#t=start,end"


@dataclass(frozen=True)
class Player:
    src: str  # file URI of the recording
    path: str
    reachable: bool
    customer_channel: str | None  # "left (channel 0)", ... None: no customer role
    channel_note: str
    stretches: list[Stretch] = field(default_factory=list)
    excerpt: str | None = None  # data: URI of the first stretch (only when asked)
    excerpt_span: tuple[float, float] | None = None


def fragment(start_s: float, end_s: float) -> str:
    """A W3C media fragment that plays ``start_s``..``end_s`` (seconds, one decimal)."""
    return f"#t={max(start_s, 0.0):.1f},{end_s:.1f}"


def _channel_note(roles: dict[str, Any], channels: int | None) -> tuple[str | None, str]:
    names = {0: "left", 1: "right"} if (channels or len(roles)) == 2 else {}
    where = {str(role): f"{names.get(int(ch), 'channel')} channel ({int(ch)})"
             if int(ch) in names else f"channel {int(ch)}" for ch, role in roles.items()}
    customer = where.get("customer")
    if customer is None:
        return None, "no channel is marked as the customer's"
    if len(where) == 1:
        return customer, f"the customer is the only voice ({customer})"
    others = ", ".join(f"the {role} on the {w}" for role, w in where.items() if role != "customer")
    return customer, f"the customer is on the {customer}; {others}"


def _negative_stretches(segs: pd.DataFrame) -> list[tuple[float, float]]:
    """Runs of customer segments scored negative, merged across short gaps."""
    if segs.empty:
        return []
    neg = segs[(segs["role"] == "customer") & segs["is_negative"].fillna(False).astype(bool)]
    runs: list[tuple[float, float]] = []
    for s in neg.sort_values("start_s").itertuples():
        start, end = float(s.start_s), float(s.end_s)
        if runs and start - runs[-1][1] <= STRETCH_GAP_S:
            runs[-1] = (runs[-1][0], max(runs[-1][1], end))
        else:
            runs.append((start, end))
    return [r for r in runs if r[1] - r[0] >= MIN_STRETCH_S]


def player_context(call: dict[str, Any], segs: pd.DataFrame,
                   window: tuple[float, float] | None, window_what: str | None, *,
                   embed_excerpt: bool = False) -> Player:
    """The player of one call: the escalation window first, then the customer's negative
    stretches, each with its media fragment."""
    path = Path(str(call["path"]))
    reachable = path.is_file()
    customer, note = _channel_note(dict(call.get("channel_roles") or {}), call.get("channels"))
    spans: list[tuple[float, float, str]] = []
    if window is not None:
        spans.append((window[0], window[1], f"escalation: {window_what or 'where it fired'}"))
    for start, end in _negative_stretches(segs):
        if window is None or not (start >= window[0] and end <= window[1]):
            spans.append((start, end, "customer negative"))
    stretches = [Stretch(s, e, what, fragment(s, e)) for s, e, what in spans[:MAX_STRETCHES]]
    excerpt, span = None, None
    if embed_excerpt and reachable and stretches:
        first = stretches[0]
        span = (first.start_s, min(first.end_s, first.start_s + MAX_EXCERPT_S))
        excerpt = _excerpt(path, span)
    return Player(src=path.absolute().as_uri() if path.is_absolute() or reachable else str(path),
                  path=str(path), reachable=reachable, customer_channel=customer,
                  channel_note=note, stretches=stretches, excerpt=excerpt,
                  excerpt_span=span if excerpt else None)


def _excerpt(path: Path, span: tuple[float, float]) -> str | None:
    """``span`` of the recording as a 16-bit WAV data URI (None if it cannot be read)."""
    try:
        signal, sr = load_audio(path, mono=False, start_s=span[0],
                                duration_s=max(span[1] - span[0], 0.1))
    except Exception:  # noqa: BLE001 - a report is still written without its excerpt
        return None
    buf = io.BytesIO()
    sf.write(buf, signal.T if signal.ndim == 2 else signal, sr, format="WAV", subtype="PCM_16")
    return "data:audio/wav;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
