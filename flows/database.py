"""The database a flow writes to, read from the settings at the flow's entry (no Prefect here).

A flow entry function resolves the URL once and hands it to its tasks (`db.engine.cached_engine`
gives each process one engine per URL); the CLI opens its database the same way.
"""

from __future__ import annotations

from config import get_settings
from db.engine import resolve_url


def database_url() -> str:
    """``DATABASE_URL``, else the embedded server's URL (started if it is not running)."""
    settings = get_settings()
    return resolve_url(settings.database_url, embedded_pgdata=settings.embedded_pgdata)
