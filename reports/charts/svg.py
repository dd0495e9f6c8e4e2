"""What every chart shares: the colours, escaping, round ticks, the ``<svg>`` builder and the
plotting area's linear maps, plus the two non-charts (an empty placeholder and an HTML legend).

Every piece of text that goes into a chart passes through :func:`esc`: :class:`_Svg` escapes the
text, titles and label it is given; a chart module that adds a raw fragment (``_Svg.add``)
escapes its text itself.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
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
