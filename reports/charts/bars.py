"""Bar charts: horizontal bars with whiskers and a reference line, vertical bars grouped by
category, and 100 % stacked bars of class shares."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

from markupsafe import Markup

from reports.charts.svg import (
    ACCENT,
    ALERT,
    GRID,
    INK,
    MUTED,
    PALETTE,
    _Plot,
    _Svg,
    class_colors,
    empty_chart,
    nice_ticks,
)

# Bar charts: labels longer than this are cut with an ellipsis; room for the value column; the
# gap between bars.
HBAR_LABEL_CHARS = 24
HBAR_VALUE_WIDTH = 64.0
HBAR_GAP = 6.0


def hbar_chart(
    items: Sequence[tuple[str, float]],
    *,
    axis_label: str,
    fmt: Callable[[float], str] = lambda v: f"{v:.2f}",
    colors: Sequence[str] | str = ACCENT,
    max_value: float | None = None,
    errors: Sequence[float | None] | None = None,
    reference: tuple[float, str] | None = None,
    width: float = 620,
    bar_height: float = 18,
    label_width: float = 150,
    title: str | None = None,
) -> Markup:
    """Horizontal bars, one per (label, value); negative values diverge from a zero line.

    ``errors`` draws ± whiskers; ``reference`` = (value, label) draws a dashed line (e.g. chance).
    """
    if not items:
        return empty_chart("no data")
    values = [float(v) for _, v in items]
    errs = [float(e) if e is not None and math.isfinite(e) else 0.0 for e in (errors or [])]
    errs += [0.0] * (len(values) - len(errs))
    lo, hi, ticks = _hbar_range(values, errs, max_value=max_value, reference=reference)
    # Grow the label column to fit the longest (truncated) label: ~6.4 px per character at 11 px.
    longest = max(min(len(label), HBAR_LABEL_CHARS) for label, _ in items)
    label_width = min(max(label_width, 6.4 * longest + 12), 0.45 * width)
    top = 22.0 if reference is not None else 8.0  # room for the reference line's label
    plot = _Plot(left=label_width, top=top, width=width - label_width - HBAR_VALUE_WIDTH,
                 height=len(items) * (bar_height + HBAR_GAP), x0=lo, x1=hi)
    height = top + plot.height + 40
    svg = _Svg(width, height, title or axis_label)
    for tick in ticks:
        svg.line(plot.sx(tick), top - 2, plot.sx(tick), plot.bottom, GRID)
        svg.text(plot.sx(tick), plot.bottom + 14, fmt(tick), anchor="middle", size=10, fill=MUTED)
    for i, ((label, value), err) in enumerate(zip(items, errs, strict=True)):
        _hbar(svg, plot, label, float(value), err, y=top + i * (bar_height + HBAR_GAP),
              bar_height=bar_height, fmt=fmt,
              color=colors if isinstance(colors, str) else colors[i % len(colors)])
    svg.line(plot.sx(0.0), top - 2, plot.sx(0.0), plot.bottom, MUTED, 1)
    if reference is not None:
        rx = plot.sx(reference[0])
        svg.line(rx, top - 6, rx, plot.bottom, ALERT, 1.2, dash="4 3")
        svg.text(rx, top - 9, reference[1], size=10, fill=ALERT, anchor="middle")
    svg.text(plot.left + plot.width / 2, height - 4, axis_label, anchor="middle", size=11,
             fill=MUTED)
    return svg.render()


def _hbar_range(values: Sequence[float], errs: Sequence[float], *, max_value: float | None,
                reference: tuple[float, str] | None) -> tuple[float, float, list[float]]:
    """(lo, hi, ticks) of a bar chart's value axis: zero, every whisker, the reference."""
    lo = min([0.0] + [v - e for v, e in zip(values, errs, strict=True)])
    hi = max([0.0] + [v + e for v, e in zip(values, errs, strict=True)])
    if max_value is not None:
        hi = max(hi, max_value)
    if reference is not None:
        lo, hi = min(lo, reference[0]), max(hi, reference[0])
    ticks = nice_ticks(lo, hi if hi > lo else lo + 1, 5)
    return min(lo, ticks[0]), max(hi, ticks[-1]), ticks


def _hbar(svg: _Svg, plot: _Plot, label: str, value: float, err: float, *, y: float,
          bar_height: float, color: str, fmt: Callable[[float], str]) -> None:
    """One bar from zero to ``value`` with its whisker, label and value text."""
    x0, x1 = sorted((plot.sx(0.0), plot.sx(value)))
    tip = f"{label}: {fmt(value)}" + (f" ± {fmt(err)}" if err else "")
    svg.rect(x0, y, max(x1 - x0, 1.0), bar_height, color, title=tip)
    if err:
        cy = y + bar_height / 2
        svg.line(plot.sx(value - err), cy, plot.sx(value + err), cy, INK, 1.2)
        svg.line(plot.sx(value - err), cy - 4, plot.sx(value - err), cy + 4, INK, 1.2)
        svg.line(plot.sx(value + err), cy - 4, plot.sx(value + err), cy + 4, INK, 1.2)
    short = label if len(label) <= HBAR_LABEL_CHARS else label[:HBAR_LABEL_CHARS - 1] + "…"
    svg.text(plot.left - 6, y + bar_height / 2 + 4, short, anchor="end", size=11)
    text = fmt(value) + (f" ±{fmt(err)}" if err else "")
    svg.text(plot.left + plot.width + 4, y + bar_height / 2 + 4, text, size=10, fill=MUTED)


def grouped_bar_chart(
    categories: Sequence[str],
    series: Mapping[str, Sequence[float | None]],
    *,
    y_label: str,
    y_max: float = 1.0,
    fmt: Callable[[float], str] = lambda v: f"{v:.2f}",
    colors: Sequence[str] | None = None,
    width: float = 620,
    height: float = 240,
    title: str | None = None,
) -> Markup:
    """Vertical bars grouped by category, one bar per series (e.g. precision and recall)."""
    if not categories or not series:
        return empty_chart("no data")
    colors = list(colors or PALETTE)
    left, right, top, bottom = 48.0, 12.0, 10.0, 46.0
    plot_w, plot_h = width - left - right, height - top - bottom
    ticks = nice_ticks(0.0, y_max, 5)
    y_top = max(ticks[-1], y_max)

    def sy(v: float) -> float:
        return top + plot_h - v / y_top * plot_h

    svg = _Svg(width, height, title or y_label)
    for tick in ticks:
        svg.line(left, sy(tick), left + plot_w, sy(tick), GRID)
        svg.text(left - 5, sy(tick) + 4, fmt(tick), anchor="end", size=10, fill=MUTED)
    group_w = plot_w / len(categories)
    n_series = len(series)
    bar_w = min(28.0, group_w * 0.8 / n_series)
    for ci, category in enumerate(categories):
        gx = left + ci * group_w + (group_w - bar_w * n_series) / 2
        for si, (name, values) in enumerate(series.items()):
            value = values[ci]
            if value is None or not math.isfinite(float(value)):
                continue
            x = gx + si * bar_w
            svg.rect(x + 1, sy(float(value)), bar_w - 2, sy(0) - sy(float(value)),
                     colors[si % len(colors)], title=f"{category} {name}: {fmt(float(value))}")
        svg.text(left + ci * group_w + group_w / 2, top + plot_h + 14, category, anchor="middle",
                 size=11)
    svg.line(left, sy(0), left + plot_w, sy(0), MUTED)
    svg.text(12, top + plot_h / 2, y_label, anchor="middle", size=11, fill=MUTED, rotate=-90)
    # Legend inside the SVG so the chart explains itself when copied elsewhere.
    lx = left
    for si, name in enumerate(series):
        svg.rect(lx, height - 16, 10, 10, colors[si % len(colors)])
        svg.text(lx + 14, height - 7, name, size=11)
        lx += 24 + 7 * len(name)
    return svg.render()


def stacked_share_bars(
    rows: Sequence[tuple[str, Mapping[str, float]]],
    classes: Sequence[str],
    *,
    axis_label: str = "share of speech time",
    width: float = 620,
    bar_height: float = 22,
    label_width: float = 90,
    title: str | None = None,
) -> Markup:
    """100 % stacked horizontal bars: one row per label, segments by class share."""
    if not rows:
        return empty_chart("no data")
    colors = class_colors(classes)
    plot_x0, plot_w = label_width, width - label_width - 16
    top, gap = 6.0, 8.0
    height = top + len(rows) * (bar_height + gap) + 30
    svg = _Svg(width, height, title or axis_label)
    for i, (label, shares) in enumerate(rows):
        y = top + i * (bar_height + gap)
        total = sum(max(float(shares.get(c, 0.0)), 0.0) for c in classes) or 1.0
        x = plot_x0
        for cls in classes:
            share = max(float(shares.get(cls, 0.0)), 0.0) / total
            if share <= 0:
                continue
            w = share * plot_w
            svg.rect(x, y, w, bar_height, colors[cls], title=f"{label} {cls}: {100 * share:.1f}%")
            if w > 34:
                svg.text(x + w / 2, y + bar_height / 2 + 4, f"{100 * share:.0f}%", anchor="middle",
                         size=10, fill="#ffffff" if cls not in ("happy", "neutral") else INK)
            x += w
        svg.text(plot_x0 - 6, y + bar_height / 2 + 4, label, anchor="end", size=11)
    base = top + len(rows) * (bar_height + gap)
    for tick in (0, 0.25, 0.5, 0.75, 1.0):
        svg.text(plot_x0 + tick * plot_w, base + 10, f"{tick:.0%}", anchor="middle", size=10,
                 fill=MUTED)
    svg.text(plot_x0 + plot_w / 2, height - 4, axis_label, anchor="middle", size=11, fill=MUTED)
    return svg.render()
