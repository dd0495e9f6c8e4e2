"""A scratch ``SER_HOME`` for benchmarks, its database, and the ``ser`` CLI.

``scratch_home`` points this process and the CLI subprocesses at an embedded PostgreSQL in a
temporary folder (or ``keep``, reused by a later run), with no ``DATABASE_URL`` and no
escalation rules of the user's; on the way out it stops the background Prefect server that
``ser train`` or ``ser ingest`` leaves running and the embedded server. ``scratch_database``
adds this process's engine on that server, migrated to head.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sqlalchemy import Engine

ROOT = Path(__file__).resolve().parent.parent


def ser(args: list[str], env: Mapping[str, str], *, timeout: float = 3600) -> str:
    """Run the ``ser`` CLI of this checkout; stdout (raises with stderr on failure)."""
    proc = subprocess.run([sys.executable, "-m", "ser", *args], env=dict(env), cwd=str(ROOT),
                          capture_output=True, text=True, timeout=timeout, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"ser {' '.join(args)} failed ({proc.returncode}):\n"
                           f"{proc.stdout[-1500:]}\n{proc.stderr[-3000:]}")
    return proc.stdout


@contextmanager
def scratch_home(keep: Path | None, *, prefix: str,
                 extra_env: Mapping[str, str] | None = None) -> Iterator[tuple[Path, dict[str, str]]]:
    """``(folder, environment for the CLI)``; this process's settings follow it too."""
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp_name:
        tmp = keep or Path(tmp_name)
        tmp.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "SER_HOME": str(tmp / "home"), "PYTHONPATH": str(ROOT),
               "PREFECT_HOME": str(tmp / "prefect"), **(extra_env or {})}
        for key in ("DATABASE_URL", "SER_RULES", "SER_ESCALATION_RULES"):
            env.pop(key, None)
            os.environ.pop(key, None)
        os.environ.update({k: env[k] for k in ("SER_HOME", "PREFECT_HOME")})
        from config import get_settings
        from db.embedded import stop_embedded

        get_settings.cache_clear()
        try:
            yield tmp, env
        finally:
            subprocess.run([sys.executable, "-m", "ser", "prefect", "stop"], env=env,
                           cwd=str(ROOT), capture_output=True, check=False)
            stop_embedded(get_settings().embedded_pgdata)


@contextmanager
def scratch_database(keep: Path | None, *, prefix: str,
                     extra_env: Mapping[str, str] | None = None,
                     ) -> Iterator[tuple[Path, dict[str, str], Engine]]:
    """``scratch_home`` and an engine on its embedded PostgreSQL, migrated to head (as every
    ``ser`` command finds it); the engine is disposed before the server stops."""
    with scratch_home(keep, prefix=prefix, extra_env=extra_env) as (tmp, env):
        from db.engine import cached_engine
        from db.migrate import ensure_migrated
        from flows.database import database_url

        engine = cached_engine(database_url())
        try:
            ensure_migrated(engine)
            yield tmp, env, engine
        finally:
            engine.dispose()
