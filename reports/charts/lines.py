"""Line charts: series over a shared x axis (ROC curves, daily trends), with gaps where a value
is missing."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from markupsafe import Markup

from reports.charts.svg import ACCENT, GRID, MUTED, _num, _Plot, _Svg, empty_chart, esc, nice_ticks


@dataclass(frozen=True)
class Series:
    name: str
    x: Sequence[float]
    y: Sequence[float | None]
    color: str = ACCENT
    dash: str | None = None
    markers: bool = False


def line_chart(
    series: Sequence[Series],
    *,
    x_label: str,
    y_label: str,
    x_range: tuple[float, float] | None = None,
    y_range: tuple[float, float] | None = None,
    x_tick_format: Callable[[float], str] = lambda v: f"{v:g}",
    y_tick_format: Callable[[float], str] = lambda v: f"{v:g}",
    x_ticks: Sequence[float] | None = None,
    diagonal: bool = False,
    highlight_x: float | None = None,
    width: float = 620,
    height: float = 260,
    title: str | None = None,
) -> Markup:
    """Lines over a shared x axis (ROC curves, daily trends). ``None`` y values break a line."""
    points = [(x, y) for s in series for x, y in zip(s.x, s.y, strict=True) if y is not None]
    if not points:
        return empty_chart("no data")
    (x0, x1), (y0, y1), y_ticks = _line_ranges(points, x_range=x_range, y_range=y_range)
    left, right, top = 54.0, 16.0, 10.0
    n_legend_rows = 1 if len(series) > 1 else 0
    bottom = 40.0 + 16 * n_legend_rows
    plot = _Plot(left=left, top=top, width=width - left - right, height=height - top - bottom,
                 x0=x0, x1=x1, y0=y0, y1=y1)
    svg = _Svg(width, height, title or f"{y_label} by {x_label}")
    _line_axes(svg, plot, y_ticks=y_ticks,
               x_ticks=x_ticks if x_ticks is not None else nice_ticks(x0, x1, 6),
               x_tick_format=x_tick_format, y_tick_format=y_tick_format)
    if diagonal:
        svg.line(plot.sx(x0), plot.sy(y0), plot.sx(x1), plot.sy(y1), "#9aa5b1", 1, dash="4 4")
    if highlight_x is not None:
        svg.rect(plot.sx(highlight_x) - 6, top, 12, plot.height, "#fdf0d5")
    for s in series:
        _line(svg, plot, s, x_tick_format=x_tick_format, y_tick_format=y_tick_format)
    svg.text(left + plot.width / 2, plot.bottom + 32, x_label, anchor="middle", size=11,
             fill=MUTED)
    svg.text(13, top + plot.height / 2, y_label, anchor="middle", size=11, fill=MUTED, rotate=-90)
    if n_legend_rows:
        lx = left
        for s in series:
            y = height - 8
            svg.line(lx, y - 4, lx + 16, y - 4, s.color, 2.5, dash=s.dash)
            svg.text(lx + 20, y, s.name, size=11)
            lx += 30 + 6.5 * len(s.name)
    return svg.render()


def _line_ranges(points: Sequence[tuple[float, float | None]], *,
                 x_range: tuple[float, float] | None, y_range: tuple[float, float] | None,
                 ) -> tuple[tuple[float, float], tuple[float, float], list[float]]:
    """((x0, x1), (y0, y1), y ticks): the given ranges, else the data's (y from 0, 10 % headroom,
    widened to round ticks)."""
    xs = [float(p[0]) for p in points]
    ys = [float(p[1]) for p in points]  # type: ignore[arg-type]
    x0, x1 = x_range or (min(xs), max(xs))
    y0, y1 = y_range or (min(0.0, min(ys)), max(ys) * 1.1 or 1.0)
    if x1 <= x0:
        x0, x1 = x0 - 1, x1 + 1
    if y1 <= y0:
        y1 = y0 + 1
    yt = nice_ticks(y0, y1, 5)
    if y_range is None:
        y0, y1 = min(y0, yt[0]), max(y1, yt[-1])
    return (x0, x1), (y0, y1), yt


def _line_axes(svg: _Svg, plot: _Plot, *, y_ticks: Sequence[float], x_ticks: Sequence[float],
               x_tick_format: Callable[[float], str],
               y_tick_format: Callable[[float], str]) -> None:
    """Horizontal grid lines at the y ticks, tick marks on the x axis, both axis lines."""
    for tick in y_ticks:
        if plot.y0 - 1e-9 <= tick <= plot.y1 + 1e-9:
            svg.line(plot.left, plot.sy(tick), plot.left + plot.width, plot.sy(tick), GRID)
            svg.text(plot.left - 5, plot.sy(tick) + 4, y_tick_format(tick), anchor="end", size=10,
                     fill=MUTED)
    for tick in x_ticks:
        if plot.x0 - 1e-9 <= tick <= plot.x1 + 1e-9:
            svg.line(plot.sx(tick), plot.bottom, plot.sx(tick), plot.bottom + 4, MUTED)
            svg.text(plot.sx(tick), plot.bottom + 15, x_tick_format(tick), anchor="middle",
                     size=10, fill=MUTED)
    svg.line(plot.left, plot.bottom, plot.left + plot.width, plot.bottom, MUTED)
    svg.line(plot.left, plot.top, plot.left, plot.bottom, MUTED)


def _line(svg: _Svg, plot: _Plot, s: Series, *, x_tick_format: Callable[[float], str],
          y_tick_format: Callable[[float], str]) -> None:
    """One series: a polyline per run of defined points, circles where it has markers (and for
    a run of one point, which a polyline cannot show)."""
    # each point keeps its data values beside its position, for its hover title
    runs: list[list[tuple[float, float, float, float]]] = [[]]
    for x, y in zip(s.x, s.y, strict=True):
        if y is None or not math.isfinite(float(y)):
            runs.append([])
        else:
            runs[-1].append((plot.sx(float(x)), plot.sy(float(y)), float(x), float(y)))
    dash = f' stroke-dasharray="{s.dash}"' if s.dash else ""
    for run in runs:
        if len(run) >= 2:
            pts = " ".join(f"{_num(px)},{_num(py)}" for px, py, _x, _y in run)
            svg.add(f'<polyline points="{pts}" fill="none" stroke="{s.color}" '
                    f'stroke-width="2" stroke-linejoin="round"{dash}><title>{esc(s.name)}'
                    f"</title></polyline>")
        if s.markers or len(run) == 1:
            for px, py, x, y in run:
                svg.add(f'<circle cx="{_num(px)}" cy="{_num(py)}" r="3" fill="{s.color}">'
                        f"<title>{esc(s.name)}: {esc(x_tick_format(x))} → "
                        f"{esc(y_tick_format(y))}</title></circle>")
