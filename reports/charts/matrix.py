"""The confusion-matrix heat map: one cell per (true, predicted) class, shaded by the share of
the true class."""

from __future__ import annotations

from collections.abc import Sequence

from markupsafe import Markup

from reports.charts.svg import INK, MUTED, _Svg, empty_chart


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
