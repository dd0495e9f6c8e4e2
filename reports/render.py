"""Pure template rendering: ``render(template, context) -> str``.

Autoescaping is on for every template, so anything that came from a file name, a CSV or the
database is shown as text. Charts are the only pre-rendered HTML; they arrive as
``markupsafe.Markup`` built by ``reports.charts``, which escapes every label itself.
"""

from __future__ import annotations

import datetime as dt
import math
from functools import lru_cache
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined

TEMPLATES_DIR = Path(__file__).parent / "templates"


def fmt_pct(value: Any, digits: int = 1) -> str:
    """0.1234 -> '12.3%'; None/NaN -> '–'."""
    if not _is_number(value):
        return "–"
    return f"{100 * float(value):.{digits}f}%"


def fmt_num(value: Any, digits: int = 2) -> str:
    if not _is_number(value):
        return "–"
    value = float(value)
    if value.is_integer() and abs(value) >= 1000:
        return f"{int(value):,}"
    return f"{value:,.{digits}f}"


def fmt_int(value: Any) -> str:
    if not _is_number(value):
        return "–"
    return f"{round(float(value)):,}"


def fmt_signed_pp(value: Any, digits: int = 1) -> str:
    """A change in a share, in percentage points: 0.021 -> '+2.1 pp'."""
    if not _is_number(value):
        return "–"
    return f"{100 * float(value):+.{digits}f} pp"


def fmt_duration(seconds: Any) -> str:
    """Seconds -> 'm:ss' (or 'h:mm:ss')."""
    if not _is_number(seconds):
        return "–"
    total = round(float(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def fmt_dt(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, dt.datetime):
        return value.strftime("%Y-%m-%d %H:%M")
    if hasattr(value, "to_pydatetime"):
        return value.to_pydatetime().strftime("%Y-%m-%d %H:%M")  # type: ignore[no-any-return]
    return str(value)


def _is_number(value: Any) -> bool:
    if value is None or isinstance(value, bool):
        return False
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


@lru_cache(maxsize=1)
def environment() -> Environment:
    """The one Jinja2 environment: autoescape always on, undefined variables are errors."""
    env = Environment(
        loader=FileSystemLoader(str(TEMPLATES_DIR)),
        autoescape=True,  # .html.j2 does not match select_autoescape's defaults, so force it
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters.update(
        pct=fmt_pct, num=fmt_num, int=fmt_int, pp=fmt_signed_pp, dur=fmt_duration, when=fmt_dt
    )
    return env


def render(template: str, context: dict[str, Any]) -> str:
    """Render ``template`` (a file name under reports/templates, e.g. ``"model.html.j2"``).

    Pure: the output depends only on the arguments (and the template files).
    """
    return environment().get_template(template).render(**context)
