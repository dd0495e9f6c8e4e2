"""Hand-made inline SVG charts: small, fast, no JavaScript, no network.

Every function returns ``markupsafe.Markup`` holding one ``<svg>`` element (or a small HTML
legend). Every piece of text that goes into a chart (class names, queue names, agent ids, file
names) passes through :func:`esc`, so a chart is as safe to embed as autoescaped template text.
Hover titles (``<title>``) carry exact values without any script.

One module per chart family over one of shared primitives: ``svg`` (colours, escaping, ticks,
the ``<svg>`` builder, the empty chart and the legend), ``bars``, ``matrix`` (the confusion
heat map), ``lines`` and ``call_timeline`` (a call over time: the timeline and the sparkline).
Callers use the names below as ``charts.<name>``.
"""

from reports.charts.bars import (
    HBAR_GAP,
    HBAR_LABEL_CHARS,
    HBAR_VALUE_WIDTH,
    grouped_bar_chart,
    hbar_chart,
    stacked_share_bars,
)
from reports.charts.call_timeline import (
    BAND_GAP,
    ROLE_COLORS,
    Conversation,
    Segment,
    mmss,
    sparkline,
    timeline,
)
from reports.charts.lines import Series, line_chart
from reports.charts.matrix import heatmap
from reports.charts.svg import (
    ACCENT,
    ALERT,
    EMOTION_COLORS,
    FONT,
    GRID,
    INK,
    MUTED,
    PALETTE,
    class_colors,
    color_for,
    empty_chart,
    esc,
    legend,
    nice_ticks,
)

__all__ = [
    "ACCENT", "ALERT", "BAND_GAP", "EMOTION_COLORS", "FONT", "GRID", "HBAR_GAP",
    "HBAR_LABEL_CHARS", "HBAR_VALUE_WIDTH", "INK", "MUTED", "PALETTE", "ROLE_COLORS",
    "Conversation", "Segment", "Series", "class_colors", "color_for", "empty_chart", "esc",
    "grouped_bar_chart", "hbar_chart", "heatmap", "legend", "line_chart", "mmss", "nice_ticks",
    "sparkline", "stacked_share_bars", "timeline",
]
