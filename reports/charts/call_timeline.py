"""Charts of one call over time: the full timeline (probability bands per role, talk lanes,
conversation marks, the escalation) and the compact sparkline of a batch report, with the
m:ss time labels they share."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from markupsafe import Markup

from reports.charts.svg import (
    ACCENT,
    ALERT,
    GRID,
    MUTED,
    _num,
    _Svg,
    class_colors,
    esc,
    nice_ticks,
)


@dataclass(frozen=True)
class Segment:
    role: str
    start_s: float
    end_s: float
    probabilities: Mapping[str, float]
    emotion: str


def _time_ticks(duration: float) -> list[float]:
    for step in (5, 10, 15, 30, 60, 120, 300, 600, 900, 1800):
        if duration / step <= 10:
            return [float(t) for t in range(0, int(duration) + 1, step)]
    return nice_ticks(0, duration, 8)


def mmss(seconds: float) -> str:
    total = round(float(seconds))
    return f"{total // 60}:{total % 60:02d}"


@dataclass(frozen=True)
class Conversation:
    """Conversation marks for :func:`timeline` (seconds from the call's start).

    ``quarters``: four ``{role: negative share or None}``; ``interruptions``: ``(start, end,
    interrupting role)``; ``silences``: ``(start, end)`` of the long silences.
    """

    quarters: Sequence[Mapping[str, float | None]] = ()
    interruptions: Sequence[tuple[float, float, str]] = ()
    silences: Sequence[tuple[float, float]] = ()


ROLE_COLORS = {"agent": "#5b6b7c", "customer": ALERT}
# Space between two roles' probability bands (their quarter labels sit in it).
BAND_GAP = 14


@dataclass(frozen=True)
class _TimelineLayout:
    """Where a call timeline draws: one probability band per role, then the lanes (talk per
    role, overtalk, and with a conversation interruptions and long silences), then the time
    axis."""

    left: float
    top: float
    plot_w: float
    band_height: float
    n_roles: int
    n_lanes: int
    duration: float
    lane_h: float = 12.0
    lane_gap: float = 4.0

    def sx(self, t: float) -> float:
        return self.left + t / self.duration * self.plot_w

    def band_y(self, ri: int) -> float:
        return self.top + ri * (self.band_height + BAND_GAP)

    def lane_y(self, ri: int) -> float:
        return self.talk_top + ri * (self.lane_h + self.lane_gap)

    @property
    def talk_top(self) -> float:
        return self.band_y(self.n_roles)

    @property
    def axis_y(self) -> float:
        return self.talk_top + self.n_lanes * (self.lane_h + self.lane_gap) + 2

    @property
    def height(self) -> float:
        return self.axis_y + 40


def timeline(
    segments: Sequence[Segment],
    *,
    duration_s: float,
    classes: Sequence[str],
    roles: Sequence[str] = ("customer", "agent"),
    overtalk: Sequence[tuple[float, float]] = (),
    escalation: tuple[float, float, str] | None = None,
    conversation: Conversation | None = None,
    width: float = 960,
    band_height: float = 86,
) -> Markup:
    """Emotion over time per role (stacked probability bands), a talk lane, and the escalation.

    Each scored segment is drawn as a column whose coloured layers are the class probabilities
    (bottom = first class). Blank stretches are silence in that role. Below: who spoke when,
    with overtalk (both roles at once) in red. ``escalation`` = (start_s, end_s, label) shades
    the stretch where the rule fired. ``conversation`` adds the four quarters (boundaries and
    each role's negative share in them) and lanes for the interruptions and long silences.
    """
    left, right = 84.0, 14.0
    lay = _TimelineLayout(
        left=left, top=22.0, plot_w=width - left - right, band_height=band_height,
        n_roles=len(roles), n_lanes=len(roles) + 1 + (2 if conversation is not None else 0),
        duration=max(float(duration_s), max((s.end_s for s in segments), default=0.0), 1.0))
    svg = _Svg(width, lay.height, "emotion over time per speaker role")
    by_role: dict[str, list[Segment]] = {r: [] for r in roles}
    for seg in segments:
        by_role.setdefault(seg.role, []).append(seg)
    # Backgrounds first, then the escalation shading over them, then the data on top.
    for ri in range(len(roles)):
        svg.rect(left, lay.band_y(ri), lay.plot_w, band_height, "#f7f8fa")
    for ri in range(lay.n_lanes):
        svg.rect(left, lay.lane_y(ri), lay.plot_w, lay.lane_h, "#f0f2f5")
    if escalation is not None:
        _escalation_mark(svg, lay, escalation)
    colors = class_colors(classes)
    for ri, role in enumerate(roles):
        _probability_band(svg, lay, ri, role, by_role.get(role, []), classes=classes,
                          colors=colors)
    _talk_lanes(svg, lay, roles, by_role, overtalk)
    if conversation is not None:
        _conversation_marks(svg, lay, conversation, roles=roles)
    _time_axis(svg, lay)
    return svg.render()


def _escalation_mark(svg: _Svg, lay: _TimelineLayout, escalation: tuple[float, float, str]) -> None:
    """Shade the stretch where the rule fired and flag it with the rule's name."""
    start, end, rule = escalation
    x0, x1 = lay.sx(max(start, 0.0)), lay.sx(min(end, lay.duration))
    svg.rect(x0, lay.top - 6, max(x1 - x0, 3.0), lay.axis_y - lay.top + 6, ALERT,
             title=f"escalation: {rule} ({mmss(start)}–{mmss(end)})",
             extra=' fill-opacity="0.13"')
    svg.line(x0, lay.top - 14, x0, lay.axis_y, ALERT, 1.5, dash="5 3")
    # Near the right edge the flag's label runs leftwards so it stays inside the chart.
    leftwards = x0 > lay.left + lay.plot_w * 0.6
    svg.text(x0 + (-4 if leftwards else 4), lay.top - 10,
             f"⚑ {rule} ({mmss(start)}–{mmss(end)})", size=11, fill=ALERT,
             weight="600", anchor="end" if leftwards else "start")


def _probability_band(svg: _Svg, lay: _TimelineLayout, ri: int, role: str,
                      segments: Sequence[Segment], *, classes: Sequence[str],
                      colors: Mapping[str, str]) -> None:
    """The ``ri``-th role's band: one column of stacked class probabilities per segment."""
    y0 = lay.band_y(ri)
    band_height = lay.band_height
    svg.text(lay.left - 8, y0 + band_height / 2 + 4, role, anchor="end", size=12, weight="600")
    svg.text(lay.left - 8, y0 + 9, "100%", anchor="end", size=9, fill=MUTED)
    svg.text(lay.left - 8, y0 + band_height, "0%", anchor="end", size=9, fill=MUTED)
    for seg in segments:
        x = lay.sx(seg.start_s)
        w = max(lay.sx(seg.end_s) - x, 0.8)
        acc = 0.0
        top_probs = sorted(seg.probabilities.items(), key=lambda kv: -float(kv[1]))[:3]
        tip = (f"{role} {mmss(seg.start_s)}–{mmss(seg.end_s)}: "
               + ", ".join(f"{k} {100 * float(v):.0f}%" for k, v in top_probs))
        parts = []
        for cls in classes:
            p = float(seg.probabilities.get(cls, 0.0))
            if p <= 0.004:  # under half a pixel tall: not drawn, which keeps the file small
                acc += p
                continue
            h = p * band_height
            yb = y0 + band_height - (acc * band_height) - h
            parts.append(f'<rect x="{_num(x)}" y="{_num(yb)}" width="{_num(w)}" '
                         f'height="{_num(h)}" fill="{colors[cls]}"/>')
            acc += p
        # One group per segment with one hover title keeps the file small.
        svg.add(f"<g><title>{esc(tip)}</title>{''.join(parts)}</g>")


def _talk_lanes(svg: _Svg, lay: _TimelineLayout, roles: Sequence[str],
                by_role: Mapping[str, Sequence[Segment]],
                overtalk: Sequence[tuple[float, float]]) -> None:
    """One lane per role marking when it spoke, then the overtalk lane."""
    for ri, role in enumerate(roles):
        y = lay.lane_y(ri)
        svg.text(lay.left - 8, y + lay.lane_h - 2, f"{role} talk", anchor="end", size=10,
                 fill=MUTED)
        for seg in by_role.get(role, []):
            svg.rect(lay.sx(seg.start_s), y, max(lay.sx(seg.end_s) - lay.sx(seg.start_s), 0.8),
                     lay.lane_h, "#5b6b7c")
    y = lay.lane_y(len(roles))
    svg.text(lay.left - 8, y + lay.lane_h - 2, "overtalk", anchor="end", size=10, fill=MUTED)
    for start, end in overtalk:
        svg.rect(lay.sx(start), y, max(lay.sx(end) - lay.sx(start), 1.0), lay.lane_h, ALERT,
                 title=f"overtalk {mmss(start)}–{mmss(end)}")


def _conversation_marks(svg: _Svg, lay: _TimelineLayout, conv: Conversation, *,
                        roles: Sequence[str]) -> None:
    """Quarter boundaries and shares over the bands; interruption and silence lanes below the
    overtalk lane."""
    sx = lay.sx
    quarter = lay.duration / 4.0
    for k in range(1, 4):
        svg.line(sx(k * quarter), lay.top - 4, sx(k * quarter), lay.axis_y, MUTED, 1, dash="2 4")
    for k, shares in enumerate(conv.quarters[:4]):
        for ri, role in enumerate(roles):
            share = shares.get(role)
            label = f"Q{k + 1} neg. {100 * share:.0f}%" if share is not None else f"Q{k + 1} –"
            svg.text(sx(k * quarter) + 4, lay.band_y(ri) - 2, label, size=9,
                     fill=ALERT if share is not None and share >= 0.5 else MUTED)
    y = lay.lane_y(len(roles)) + lay.lane_h + lay.lane_gap
    svg.text(lay.left - 8, y + lay.lane_h - 2, "interruptions", anchor="end", size=10, fill=MUTED)
    for start, end, role in conv.interruptions:
        svg.rect(sx(start), y, max(sx(end) - sx(start), 3.0), lay.lane_h,
                 ROLE_COLORS.get(role, ACCENT),
                 title=f"{role} interrupts at {mmss(start)} ({end - start:.1f} s overlap)")
    y += lay.lane_h + lay.lane_gap
    svg.text(lay.left - 8, y + lay.lane_h - 2, "long silence", anchor="end", size=10, fill=MUTED)
    for start, end in conv.silences:
        svg.rect(sx(start), y, max(sx(end) - sx(start), 1.0), lay.lane_h, "#c9a227",
                 title=f"silence {mmss(start)}–{mmss(end)} ({end - start:.1f} s)")


def _time_axis(svg: _Svg, lay: _TimelineLayout) -> None:
    svg.line(lay.left, lay.axis_y, lay.left + lay.plot_w, lay.axis_y, MUTED)
    for tick in _time_ticks(lay.duration):
        svg.line(lay.sx(tick), lay.axis_y, lay.sx(tick), lay.axis_y + 4, MUTED)
        svg.text(lay.sx(tick), lay.axis_y + 15, mmss(tick), anchor="middle", size=10, fill=MUTED)
    svg.text(lay.left + lay.plot_w / 2, lay.axis_y + 32, "time into the call (m:ss)",
             anchor="middle", size=11, fill=MUTED)


def sparkline(
    lines: Mapping[str, Sequence[tuple[float, float]]],
    *,
    duration_s: float,
    escalation: tuple[float, float] | None = None,
    width: float = 420,
    height: float = 64,
    colors: Mapping[str, str] | None = None,
) -> Markup:
    """Compact negative-probability lines per role (0-100 %) for a batch report's call section."""
    colors = colors or {"customer": ALERT, "agent": "#7f8c8d"}
    duration = max(float(duration_s), 1.0)
    left, top, plot_w, plot_h = 34.0, 4.0, width - 40.0, height - 20.0

    def sx(t: float) -> float:
        return left + t / duration * plot_w

    def sy(p: float) -> float:
        return top + plot_h - p * plot_h

    svg = _Svg(width, height, "negative-emotion probability over the call")
    svg.rect(left, top, plot_w, plot_h, "#f7f8fa")
    if escalation is not None:
        svg.rect(sx(escalation[0]), top, max(sx(escalation[1]) - sx(escalation[0]), 2.0), plot_h,
                 "#fde2e1")
    svg.line(left, sy(0.5), left + plot_w, sy(0.5), GRID, dash="3 3")
    svg.text(left - 4, top + 8, "100%", anchor="end", size=9, fill=MUTED)
    svg.text(left - 4, top + plot_h, "0%", anchor="end", size=9, fill=MUTED)
    for role, pts in lines.items():
        if not pts:
            continue
        coords = " ".join(f"{_num(sx(t))},{_num(sy(p))}" for t, p in pts)
        svg.add(f'<polyline points="{coords}" fill="none" stroke="{colors.get(role, ACCENT)}" '
                f'stroke-width="1.5"><title>{esc(role)} negative probability</title></polyline>')
    svg.text(left, height - 3, "0:00", size=9, fill=MUTED)
    svg.text(left + plot_w, height - 3, mmss(duration), anchor="end", size=9, fill=MUTED)
    return svg.render()
