"""Embedded PostgreSQL (the `pgserver` wheel) used when DATABASE_URL is unset.

The server is started on demand and left running (cleanup_mode=None) so that later commands
reuse it instantly; it listens on a Unix socket only, never on a TCP port.

Trust model: ``pgserver``'s ``initdb`` trusts every local connection. ``ser`` closes that on the
first start: the ``postgres`` superuser gets a random password, kept in a 0600 password file
beside the data directory (``pgdata.pgpass``, libpq's format) and named in the URL
(``passfile=``), and ``pg_hba.conf`` asks every login for its password (scram-sha-256). So
whoever can reach the socket (other users when the socket lands in a shared runtime folder,
and the one ``pgserver`` OS account that runs every embedded server root starts) cannot log in
without a password; the password file stays readable by the owner only.
"""

from __future__ import annotations

import logging
import os
import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import psycopg2

from .passwords import scram_sha256

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


HBA_MARKER = "# ser: every login authenticates with a password (scram-sha-256)"
# The whole file: initdb's "trust" lines would let anyone who reaches the socket in.
HBA_CONF = f"""{HBA_MARKER}
# the owner's password is in the password file beside this data directory (<pgdata>.pgpass)
local   all             all                                     scram-sha-256
host    all             all             127.0.0.1/32            scram-sha-256
host    all             all             ::1/128                 scram-sha-256
local   replication     all                                     scram-sha-256
"""
SUPERUSER = "postgres"


def password_file(pgdata: Path) -> Path:
    """Where the owner's password of the server on ``pgdata`` is kept (outside the data
    directory, which belongs to the server's OS account when root starts it)."""
    return pgdata.with_name(pgdata.name + ".pgpass")


def ensure_password_file(path: Path) -> str:
    """The superuser's password from ``path`` (libpq's password-file format), made on first use.

    Created 0600 and published with a hard link, so concurrent first starts agree on one
    password.
    """
    if not path.exists():
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w") as out:
                out.write(f"*:*:*:{SUPERUSER}:{secrets.token_hex(24)}\n")
            try:
                os.link(tmp, path)
            except FileExistsError:
                pass
        finally:
            tmp.unlink(missing_ok=True)
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        raise EmbeddedServerError(
            f"{path} is readable by other users (mode {mode:o}); run: chmod 600 {path}")
    for line in path.read_text().splitlines():
        fields = line.split(":")
        if len(fields) == 5 and fields[3] == SUPERUSER and fields[4]:
            return fields[4]
    raise EmbeddedServerError(f"{path} holds no password for {SUPERUSER}; delete it only "
                              "together with the data directory beside it")


def requires_passwords(pgdata: Path) -> bool:
    """True once ``pgdata/pg_hba.conf`` is :data:`HBA_CONF`."""
    try:
        return HBA_MARKER in (Path(pgdata) / "pg_hba.conf").read_text()
    except OSError:
        return False


def write_hba(pgdata: Path) -> None:
    """Replace ``pgdata/pg_hba.conf`` with :data:`HBA_CONF` (the server must then reload)."""
    hba = Path(pgdata) / "pg_hba.conf"
    # the server may run as another user (pgserver does when started by root): the new file
    # keeps the old one's owner and mode, or the server could no longer read it
    st = hba.stat()
    tmp = hba.with_suffix(".conf.tmp")
    tmp.write_text(HBA_CONF)
    tmp.chmod(st.st_mode & 0o777)
    if (st.st_uid, st.st_gid) != (os.getuid(), os.getgid()):
        os.chown(tmp, st.st_uid, st.st_gid)
    tmp.replace(hba)


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


def ensure_analytics_settings(pgdata: Path, execute: Callable[[str], object]) -> bool:
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
        execute(f"ALTER SYSTEM SET {name} = '{value}'")
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
    socket_dir = parse_qs(urlsplit(server.get_uri()).query)["host"][0]
    passfile = password_file(pgdata)
    password = ensure_password_file(passfile)
    try:
        with _superuser(socket_dir, passfile) as cur:
            if not requires_passwords(pgdata):
                # still initdb's trust: set the password, then require it
                cur.execute("SELECT format('ALTER ROLE %%I PASSWORD %%L', %s, %s)",
                            (SUPERUSER, scram_sha256(password)))
                cur.execute(cur.fetchone()[0])
                write_hba(pgdata)
                cur.execute("SELECT pg_reload_conf()")
            if ensure_analytics_settings(pgdata, cur.execute):
                cur.execute("SELECT pg_reload_conf()")
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,))
            if cur.fetchone() is None:
                cur.execute(f'CREATE DATABASE "{database}"')
    except psycopg2.OperationalError as exc:
        raise EmbeddedServerError(
            f"could not log in to the embedded PostgreSQL in {pgdata} with the password in "
            f"{passfile}: {str(exc).strip().splitlines()[0]}. The file must be the one made "
            "with this data directory (restore it from a backup of $SER_HOME)") from exc
    return (f"postgresql+psycopg2://{SUPERUSER}@/{database}"
            f"?host={quote(socket_dir)}&passfile={quote(str(passfile))}")


@contextmanager
def _superuser(socket_dir: str, passfile: Path) -> Iterator[Any]:
    conn = psycopg2.connect(host=socket_dir, dbname="postgres", user=SUPERUSER,
                            passfile=str(passfile))
    try:
        # ALTER SYSTEM and CREATE DATABASE refuse to run inside a transaction block
        conn.autocommit = True
        with conn.cursor() as cur:
            yield cur
    finally:
        conn.close()


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
