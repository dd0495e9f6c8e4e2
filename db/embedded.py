"""Embedded PostgreSQL (the `pgserver` wheel) used when DATABASE_URL is unset.

The server is started on demand and left running (cleanup_mode=None) so that later commands
reuse it instantly; it listens on a Unix socket only, never on a TCP port.

Trust model: ``pgserver``'s ``initdb`` trusts every local connection, so whoever can open the
socket (in ``$SER_HOME``, a 0700 directory of the user running ser) logs in as any role,
``postgres`` (superuser, no password) included. That is right for one user on their own machine
and is kept for the owner; but analyst logins (members of ``ser_analyst``, made by
``ser db analyst add``) must authenticate with their password (scram-sha-256): see
:func:`ensure_password_auth`. Anyone needing more should run a real server (``DATABASE_URL``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

log = logging.getLogger(__name__)

DEFAULT_DATABASE = "ser"


class EmbeddedServerError(RuntimeError):
    """The embedded PostgreSQL could not be started."""


def _quiet_platformdirs() -> None:
    # pgserver asks platformdirs for a runtime dir; without XDG_RUNTIME_DIR it warns on every call.
    if "XDG_RUNTIME_DIR" not in os.environ:
        runtime = Path("/tmp") / f"ser-runtime-{os.getuid()}"
        runtime.mkdir(mode=0o700, exist_ok=True)
        os.environ["XDG_RUNTIME_DIR"] = str(runtime)


HBA_BEGIN = "# >>> ser: analyst logins authenticate with a password"
HBA_END = "# <<< ser"
# First match wins in pg_hba.conf: these lines go above initdb's "trust" lines. "+ser_analyst"
# matches members of the role (superusers only if they are members), so the owner keeps trust.
HBA_BLOCK = f"""{HBA_BEGIN}
local   all             +ser_analyst                            scram-sha-256
host    all             +ser_analyst    127.0.0.1/32            scram-sha-256
host    all             +ser_analyst    ::1/128                 scram-sha-256
{HBA_END}
"""


def ensure_password_auth(pgdata: Path) -> bool:
    """Put :data:`HBA_BLOCK` at the top of ``pgdata/pg_hba.conf``; True if the file changed
    (the server must then reload its configuration)."""
    hba = Path(pgdata) / "pg_hba.conf"
    if not hba.is_file():
        return False
    current = hba.read_text()
    if HBA_BEGIN in current:
        return False
    # the server may run as another user (pgserver does when started by root): the new file
    # keeps the old one's owner and mode, or the server could no longer read it
    st = hba.stat()
    tmp = hba.with_suffix(".conf.tmp")
    tmp.write_text(HBA_BLOCK + current)
    tmp.chmod(st.st_mode & 0o777)
    if (st.st_uid, st.st_gid) != (os.getuid(), os.getgid()):
        os.chown(tmp, st.st_uid, st.st_gid)
    tmp.replace(hba)
    return True


def _memory_mb() -> int:
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 2**20
    except (ValueError, OSError, AttributeError):  # not every platform reports it
        return 4096


def analytics_settings(*, memory_mb: int | None = None) -> dict[str, str]:
    """Server settings for analytics on one machine (docs/analytics.md, "Embedded server").

    initdb's defaults assume a tiny shared box and spinning disks: 4 MB ``work_mem`` makes a
    month of trends sort on disk, and ``random_page_cost = 4`` steers date-window queries away
    from their indexes. ``effective_cache_size`` is half the machine's memory (the OS page cache
    holds the data; it is a planner hint, nothing is allocated).
    """
    memory = memory_mb if memory_mb is not None else _memory_mb()
    return {
        "work_mem": "64MB",
        "maintenance_work_mem": "256MB",
        "random_page_cost": "1.1",
        "effective_io_concurrency": "200",
        "effective_cache_size": f"{max(memory // 2, 512)}MB",
    }


def ensure_analytics_settings(pgdata: Path, psql: Callable[[str], str]) -> bool:
    """``ALTER SYSTEM SET`` each of :func:`analytics_settings` that ``postgresql.auto.conf`` does
    not set yet (so a value the owner changed with ALTER SYSTEM is kept); True if any was set
    (the server must then reload its configuration)."""
    try:
        current = (Path(pgdata) / "postgresql.auto.conf").read_text()
    except OSError:  # a server running as another user: leave its configuration alone
        return False
    present = {line.split("=", 1)[0].strip() for line in current.splitlines() if "=" in line}
    missing = {k: v for k, v in analytics_settings().items() if k not in present}
    for name, value in missing.items():
        # one statement per call: ALTER SYSTEM refuses to run inside a transaction block
        psql(f"ALTER SYSTEM SET {name} = '{value}';")
    return bool(missing)


def start_embedded(pgdata: Path, *, database: str = DEFAULT_DATABASE) -> str:
    """Start (or reuse) the embedded server under ``pgdata``; return a psycopg2 URL for ``database``.

    The database is created if it does not exist.
    """
    _quiet_platformdirs()
    try:
        import pgserver
    except ImportError as exc:  # pragma: no cover - dependency of the package
        raise EmbeddedServerError("the 'pgserver' package is not installed") from exc
    pgdata = pgdata.expanduser().resolve()
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    try:
        server = pgserver.get_server(pgdata, cleanup_mode=None)
    except Exception as exc:
        raise EmbeddedServerError(
            f"could not start the embedded PostgreSQL in {pgdata}: {exc}. "
            "Set DATABASE_URL to use an existing server instead."
        ) from exc
    changed = ensure_password_auth(pgdata)
    changed = ensure_analytics_settings(pgdata, server.psql) or changed
    if changed:
        server.psql("SELECT pg_reload_conf();")
    exists = server.psql(f"SELECT 1 FROM pg_database WHERE datname = '{database}';")
    if "1 row" not in exists:
        server.psql(f'CREATE DATABASE "{database}";')
    socket_dir = parse_qs(urlsplit(server.get_uri()).query)["host"][0]
    return f"postgresql+psycopg2://postgres@/{database}?host={socket_dir}"


def psql_url(sqlalchemy_url: str) -> str:
    """The same URL in the form `psql` accepts (no driver suffix)."""
    return sqlalchemy_url.replace("postgresql+psycopg2://", "postgresql://", 1)


def stop_embedded(pgdata: Path) -> None:
    """Stop the embedded server on ``pgdata`` (benchmarks' scratch servers; users keep theirs)."""
    _quiet_platformdirs()
    import pgserver

    server = pgserver.get_server(pgdata.expanduser().resolve(), cleanup_mode=None)
    server.cleanup_mode = "stop"
    server.cleanup()
