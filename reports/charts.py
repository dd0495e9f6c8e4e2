"""Hand-made inline SVG charts: small, fast, no JavaScript, no network.

Every function returns ``markupsafe.Markup`` holding one ``<svg>`` element (or a small HTML
legend). Every piece of text that goes into a chart (class names, queue names, agent ids, file
names) passes through :func:`esc`, so a chart is as safe to embed as autoescaped template text.
Hover titles (``<title>``) carry exact values without any script.
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from markupsafe import Markup

FONT = "system-ui,-apple-system,'Segoe UI',Roboto,Helvetica,Arial,sans-serif"
INK = "#1f2933"
MUTED = "#6b7785"
GRID = "#e4e7eb"
ACCENT = "#2f6db5"
ALERT = "#c0392b"

# One colour per class everywhere (model, batch and call reports agree). Negative emotions are warm.
EMOTION_COLORS: dict[str, str] = {
    "angry": "#d64541",
    "disgust": "#8e5b3f",
    "fearful": "#8e6cc0",
    "sad": "#3f7fbf",
    "negative": "#d64541",
    "neutral": "#a7b1bc",
    "calm": "#58a869",
    "positive": "#58a869",
    "happy": "#f0b429",
    "surprised": "#2bb3c0",
    "pleasant_surprise": "#2bb3c0",
    "boredom": "#c7b198",
}
PALETTE = ["#2f6db5", "#e07b39", "#58a869", "#d64541", "#8e6cc0", "#8e5b3f", "#d86fb0", "#7f8c8d",
           "#b5bd3e", "#2bb3c0"]


def esc(value: object) -> str:
    """Text for an SVG/HTML text node or attribute."""
    return html.escape(str(value), quote=True)


def color_for(label: str, index: int = 0) -> str:
    return EMOTION_COLORS.get(label, PALETTE[index % len(PALETTE)])


def class_colors(classes: Sequence[str]) -> dict[str, str]:
    """Stable colours for a list of classes; unknown labels take palette colours in order."""
    out: dict[str, str] = {}
    spare = iter(c for c in PALETTE if c not in EMOTION_COLORS.values())
    for label in classes:
        out[label] = EMOTION_COLORS.get(label) or next(spare, PALETTE[len(out) % len(PALETTE)])
    return out


def nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """About ``n`` round tick values covering [lo, hi] (1, 2, 2.5, 5 x 10^k steps)."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return [0.0]
    if hi <= lo:
        hi = lo + 1.0
    raw = (hi - lo) / max(n, 1)
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    start = math.floor(lo / step + 1e-9) * step
    ticks = []
    value = start
    while value <= hi + step * 1e-6:
        if value >= lo - step * 1e-6:
            ticks.append(round(value, 10))
        value += step
    return ticks


def _num(value: float) -> str:
    """Compact coordinates keep the SVG small."""
    return f"{value:.1f}".rstrip("0").rstrip(".")


@dataclass
class _Svg:
    width: float
    height: float
    label: str
    parts: list[str] = field(default_factory=list)

    def add(self, fragment: str) -> None:
        self.parts.append(fragment)

    def rect(self, x: float, y: float, w: float, h: float, fill: str, title: str | None = None,
             extra: str = "") -> None:
        tip = f"<title>{esc(title)}</title>" if title else ""
        attrs = f'x="{_num(x)}" y="{_num(y)}" width="{_num(max(w, 0))}" height="{_num(max(h, 0))}"'
        if tip:
            self.add(f'<rect {attrs} fill="{fill}"{extra}>{tip}</rect>')
        else:
            self.add(f'<rect {attrs} fill="{fill}"{extra}/>')

    def line(self, x1: float, y1: float, x2: float, y2: float, stroke: str = GRID,
             width: float = 1, dash: str | None = None) -> None:
        dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
        self.add(f'<line x1="{_num(x1)}" y1="{_num(y1)}" x2="{_num(x2)}" y2="{_num(y2)}" '
                 f'stroke="{stroke}" stroke-width="{width}"{dash_attr}/>')

    def text(self, x: float, y: float, content: object, *, anchor: str = "start", size: int = 11,
             fill: str = INK, weight: str | None = None, rotate: float | None = None) -> None:
        extra = f' font-weight="{weight}"' if weight else ""
        if rotate is not None:
            extra += f' transform="rotate({rotate} {_num(x)} {_num(y)})"'
        self.add(f'<text x="{_num(x)}" y="{_num(y)}" text-anchor="{anchor}" font-size="{size}" '
                 f'fill="{fill}"{extra}>{esc(content)}</text>')

    def render(self) -> Markup:
        head = (f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" role="img" '
                f'aria-label="{esc(self.label)}" viewBox="0 0 {_num(self.width)} {_num(self.height)}" '
                f'width="{_num(self.width)}" height="{_num(self.height)}" '
                f'font-family="{esc(FONT)}">')
        return Markup(head + f"<title>{esc(self.label)}</title>" + "".join(self.parts) + "</svg>")


@dataclass(frozen=True)
class _Plot:
    """A chart's plotting area (pixels) and its linear maps from data values to pixels."""

    left: float
    top: float
    width: float
    height: float
    x0: float = 0.0
    x1: float = 1.0
    y0: float = 0.0
    y1: float = 1.0

    @property
    def bottom(self) -> float:
        return self.top + self.height

    def sx(self, v: float) -> float:
        return self.left + (v - self.x0) / (self.x1 - self.x0) * self.width

    def sy(self, v: float) -> float:
        return self.top + self.height - (v - self.y0) / (self.y1 - self.y0) * self.height


def empty_chart(message: str, *, width: float = 560, height: float = 60) -> Markup:
    svg = _Svg(width, height, message)
    svg.rect(0.5, 0.5, width - 1, height - 1, "#f7f8fa", extra=f' stroke="{GRID}"')
    svg.text(width / 2, height / 2 + 4, message, anchor="middle", fill=MUTED, size=12)
    return svg.render()


def legend(items: Mapping[str, str]) -> Markup:
    """An HTML legend: ``{label: colour}``."""
    spans = "".join(
        f'<span class="key"><i style="background:{esc(color)}"></i>{esc(label)}</span>'
        for label, color in items.items()
    )
    return Markup(f'<div class="legend">{spans}</div>')


# --------------------------------------------------------------------------------------------
# Bars
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# Matrices and curves
# --------------------------------------------------------------------------------------------


def heatmap(
    matrix: Sequence[Sequence[float]],
    row_labels: Sequence[str],
    col_labels: Sequence[str],
    *,
    x_label: str = "predicted class",
    y_label: str = "true class",
    cell: float = 58,
    title: str = "confusion matrix",
) -> Markup:
    """Confusion-matrix heat map: colour = share of the true class (row), text = share and count."""
    if not matrix or not row_labels:
        return empty_chart("no confusion matrix stored")
    label_w, top = 96.0, 30.0
    n_rows, n_cols = len(row_labels), len(col_labels)
    width = label_w + n_cols * cell + 20
    height = top + n_rows * cell + 44
    svg = _Svg(width, height, title)
    svg.text(label_w + n_cols * cell / 2, 12, x_label, anchor="middle", size=11, fill=MUTED)
    for j, label in enumerate(col_labels):
        svg.text(label_w + j * cell + cell / 2, top - 5, label, anchor="middle", size=11)
    for i, label in enumerate(row_labels):
        row = [float(v) for v in matrix[i]]
        total = sum(row) or 1.0
        svg.text(label_w - 6, top + i * cell + cell / 2 + 4, label, anchor="end", size=11)
        for j, count in enumerate(row):
            share = count / total
            # White -> accent blue; the diagonal reads as a dark stripe when the model is good.
            shade = _mix("#ffffff", "#1d4f91", share)
            svg.rect(label_w + j * cell, top + i * cell, cell - 2, cell - 2, shade,
                     title=f"true {label}, predicted {col_labels[j]}: {count:g} ({100 * share:.1f}%)")
            ink = "#ffffff" if share > 0.5 else INK
            cx, cy = label_w + j * cell + cell / 2 - 1, top + i * cell + cell / 2
            svg.text(cx, cy, f"{100 * share:.0f}%", anchor="middle", size=12, fill=ink,
                     weight="600" if i == j else None)
            svg.text(cx, cy + 13, f"n={count:g}", anchor="middle", size=9, fill=ink)
    svg.text(14, top + n_rows * cell / 2, y_label, anchor="middle", size=11, fill=MUTED, rotate=-90)
    svg.text(label_w + n_cols * cell / 2, height - 8,
             "cell colour and % = share of the true class (row); n = clips", anchor="middle",
             size=10, fill=MUTED)
    return svg.render()


def _mix(a: str, b: str, t: float) -> str:
    t = min(max(t, 0.0), 1.0)
    ca = [int(a[i:i + 2], 16) for i in (1, 3, 5)]
    cb = [int(b[i:i + 2], 16) for i in (1, 3, 5)]
    return "#" + "".join(f"{round(x + (y - x) * t):02x}" for x, y in zip(ca, cb, strict=True))


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


# --------------------------------------------------------------------------------------------
# Call timelines
# --------------------------------------------------------------------------------------------


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
