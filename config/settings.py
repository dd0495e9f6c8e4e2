"""The one settings object, read from the environment (and an optional ``.env``)."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Runtime configuration.

    Environment variables (case-insensitive): ``DATABASE_URL``, ``SER_HOME``, ``SER_REPORTS_DIR``,
    ``SER_DASK_ADDRESS``, ``SER_WORKERS``, ``SER_NIGHTLY_CRON``, ``SER_INBOX``,
    ``SER_PREFECT_SERVER``, ``SER_BATCH_ROOTS``, ``SER_RULES`` (or ``SER_ESCALATION_RULES``).
    """

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", populate_by_name=True)

    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL (postgresql+psycopg2://...). Unset: the embedded server.",
    )
    ser_home: Path = Field(default=Path("~/.local/share/ser"), description="Data home.")
    reports_dir: Path | None = Field(default=None, alias="SER_REPORTS_DIR")
    dask_address: str | None = Field(default=None, alias="SER_DASK_ADDRESS")
    workers: int = Field(default=2, alias="SER_WORKERS", ge=1)
    nightly_cron: str = Field(default="0 2 * * *", alias="SER_NIGHTLY_CRON")
    inbox: Path | None = Field(default=None, alias="SER_INBOX")
    inbox_settle_s: float = Field(
        default=30.0, alias="SER_INBOX_SETTLE_S", ge=0.0,
        description="The nightly inbox scores a recording only once it has not changed for "
        "this many seconds (a copy still arriving waits for the next run).")
    batch_roots: str | None = Field(
        default=None, alias="SER_BATCH_ROOTS",
        description="Folders outside a batch folder that its calls.csv may point into "
        "(separated by ':'); by default a batch reads only files inside its own folder.")
    prefect_server: Literal["local", "ephemeral"] = Field(
        default="local", alias="SER_PREFECT_SERVER",
        description="local: a background Prefect server reused by every command; "
        "ephemeral: Prefect's per-process temporary server.")
    rules: str | None = Field(
        default=None, validation_alias=AliasChoices("SER_RULES", "SER_ESCALATION_RULES"),
        description="Escalation rules when a command is given no --rules: a .json/.toml file "
        "or inline JSON, as `ser score --rules` takes. Unset: the model's operating point "
        "(else the built-in rules).")
    agent_negative_prior: float | Literal["off"] | None = Field(
        default=None, alias="SER_AGENT_NEGATIVE_PRIOR",
        description="Share of agents' speech expected to be negative (0-1, exclusive); agents' "
        "segments are read with it instead of the models' balanced prior. Unset: the scorer's "
        "default (etl.scoring.role_prior); off: the models' own prior.")

    @property
    def home(self) -> Path:
        return self.ser_home.expanduser().resolve()

    @property
    def embedded_pgdata(self) -> Path:
        return self.home / "pgdata"

    @property
    def prefect_home(self) -> Path:
        return self.home / "prefect"

    @property
    def reports_path(self) -> Path:
        return (self.reports_dir or self.home / "reports").expanduser().resolve()

    @property
    def batch_root_paths(self) -> tuple[Path, ...]:
        """``SER_BATCH_ROOTS`` as resolved folders (empty: only the batch folder itself)."""
        parts = (self.batch_roots or "").split(os.pathsep)
        return tuple(Path(p).expanduser().resolve() for p in parts if p.strip())

    @property
    def inbox_path(self) -> Path:
        return (self.inbox or self.home / "inbox").expanduser().resolve()


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The settings of this process, read once (tests clear the cache after changing them)."""
    return Settings()
