"""What every report shares: file names in the reports folder, the atomic write, the Prefect
link artifact, and the coercions that turn database values into template-ready ones."""

from __future__ import annotations

import datetime as dt
import json
import math
import re
import sys
from pathlib import Path
from typing import Any


def slug(value: object) -> str:
    """A file-name-safe form of a model name (lower-case letters, digits, dot, dash)."""
    return re.sub(r"[^a-z0-9.]+", "-", str(value).lower()).strip("-") or "x"


def model_file(name: str, version: int) -> str:
    return f"model-{slug(name)}-v{int(version)}.html"


def batch_file(batch_date: dt.date) -> str:
    return f"batch-{batch_date.isoformat()}.html"


def call_file(call_id: int) -> str:
    return f"calls/call-{int(call_id)}.html"


def write(out_dir: Path, relative: str, html: str) -> Path:
    """Write ``html`` to ``out_dir / relative`` through a temporary file; return the path."""
    path = Path(out_dir) / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(html, encoding="utf-8")
    tmp.replace(path)  # atomic: the index never links a half-written file
    return path


def publish_artifact(path: Path, *, key: str, description: str) -> None:
    """A Prefect link artifact for ``path`` when called inside a flow or task run."""
    if "prefect" not in sys.modules:  # not imported -> certainly not inside a flow run
        return
    # Imported here so that writing a report outside a flow never loads Prefect.
    from prefect.artifacts import create_link_artifact
    from prefect.context import FlowRunContext, TaskRunContext

    if FlowRunContext.get() is None and TaskRunContext.get() is None:
        return
    create_link_artifact(key=slug(key).replace(".", "-")[:100], link=path.resolve().as_uri(),
                         link_text=path.name, description=description)


def finite(value: Any) -> float | None:
    """``value`` as a float, or None when it is missing, not a number, NaN or infinite."""
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def rate(num: float, den: float) -> float | None:
    """``num / den``, or None when there is nothing to divide by."""
    return num / den if den else None


def extra(value: Any) -> dict[str, Any]:
    """A JSON column (``extra``, ``options``) as a dict, whether stored as JSON text or not."""
    if isinstance(value, dict):
        return value
    if isinstance(value, str) and value:
        loaded = json.loads(value)
        return loaded if isinstance(loaded, dict) else {}
    return {}


def probabilities(value: Any) -> dict[str, float]:
    """A segment's class probabilities (stored as a dict, or as its JSON text)."""
    return value if isinstance(value, dict) else json.loads(value)  # type: ignore[no-any-return]


def negative_mass(probs: Any, negative: set[str]) -> float:
    """The probability a segment gives to the negative classes (none stored: 0)."""
    probs = probs if isinstance(probs, dict) else json.loads(probs or "{}")
    return float(sum(float(v) for k, v in probs.items() if k in negative))
