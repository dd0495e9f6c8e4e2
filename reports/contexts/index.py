"""The index's context: every report in the folder, read back from the files themselves."""

from __future__ import annotations

import datetime as dt
import html
import json
import re
from pathlib import Path
from typing import Any

_META = re.compile(r'<meta name="ser-report" content="([^"]*)"')
_TITLE = re.compile(r"<title>(.*?)</title>", re.DOTALL)
# Each report puts its <meta name="ser-report"> and <title> in the first few KB.
_HEAD_CHARS = 4096
KINDS = ("batch", "model", "call")


def index_context(folder: Path) -> dict[str, Any]:
    """Every report under ``folder`` by kind: batches and models newest first, escalated calls
    first."""
    groups = _reports(folder)
    groups["batch"].sort(key=lambda m: str(m.get("sort", "")), reverse=True)
    groups["model"].sort(key=lambda m: str(m.get("sort", "")), reverse=True)
    groups["call"].sort(key=lambda m: (not m.get("escalated"), str(m.get("sort", ""))))
    return {"kind": "index", "title": "ser-analytics reports",
            "subtitle": f"{sum(len(v) for v in groups.values())} reports in {folder}",
            "generated_at": dt.datetime.now(dt.UTC), "groups": groups, "root": "",
            "meta": {"kind": "index"}}


def _reports(folder: Path) -> dict[str, list[dict[str, Any]]]:
    """kind -> the meta of each report file in ``folder`` and ``folder/calls`` (file order)."""
    groups: dict[str, list[dict[str, Any]]] = {kind: [] for kind in KINDS}
    for path in sorted(folder.glob("*.html")) + sorted(folder.glob("calls/*.html")):
        if path.name == "index.html":
            continue
        meta = report_meta(path)
        if meta is None or meta.get("kind") not in groups:
            continue
        meta["href"] = path.relative_to(folder).as_posix()
        meta["size_kb"] = path.stat().st_size / 1024
        meta["modified"] = dt.datetime.fromtimestamp(path.stat().st_mtime)
        groups[meta["kind"]].append(meta)
    return groups


def report_meta(path: Path) -> dict[str, Any] | None:
    """kind/title/summary that each report embeds in its <head>; None for other HTML files."""
    with path.open(encoding="utf-8", errors="replace") as fh:
        head = fh.read(_HEAD_CHARS)
    meta = _META.search(head)
    if not meta:
        return None
    data = json.loads(html.unescape(meta.group(1)))
    title = _TITLE.search(head)
    data["title"] = html.unescape(title.group(1)) if title else path.stem
    return data
