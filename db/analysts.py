"""Analyst logins and the limits the scorer keeps on them (``ser db analyst``, nightly runs).

``ser_analyst`` is the read-only role of the ``analytics`` views; a login is a member of it.
Its session limits (:data:`LIMIT_NAMES`) are per-role, per-database settings
(``ALTER ROLE … IN DATABASE … SET``), copied to every login because PostgreSQL applies a role's
settings only to sessions that log in as that role.

What PostgreSQL cannot prevent: a role may change its *own* session defaults (``ALTER ROLE
alice [IN DATABASE ser] SET statement_timeout = 0``) and no privilege, event trigger or
``pg_hba.conf`` line revokes that (roles are cluster-wide objects: event triggers do not see
them). So the limits are **re-applied** instead: :func:`enforce_analyst_policy` resets every
setting of :data:`LIMIT_NAMES` an analyst login holds in any scope other than the one the
owner manages (her role in all databases, or her role in this database) back to ``ser_analyst``'s
values, and :func:`effective_limits` reports what each login gets now. ``ser db analyst …`` and
every nightly run call it. An analyst can still ``SET statement_timeout = 0`` inside one session
(PostgreSQL lets every role do that), which lasts until she disconnects.

Temporary tables are not temporary files: ``temp_file_limit`` does not bound them, and
PostgreSQL has no quota on them. :func:`enforce_analyst_policy` therefore revokes ``TEMPORARY``
on this database from ``PUBLIC`` and grants it to the scorer's own role: analysts can no longer
``CREATE TEMP TABLE`` here (their sorts and hashes still spill to temporary files, bounded by
``temp_file_limit``).

Nothing here commits; the caller owns the transaction.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from sqlalchemy import Connection, text

log = logging.getLogger(__name__)

ANALYST_ROLE = "ser_analyst"
LIMIT_NAMES = ("statement_timeout", "idle_in_transaction_session_timeout", "temp_file_limit")


def analyst_limits(conn: Connection) -> dict[str, str]:
    """The limits set on ser_analyst in this database (the values new logins get)."""
    rows = conn.execute(text(
        "SELECT unnest(s.setconfig) FROM pg_db_role_setting s JOIN pg_roles r ON r.oid = "
        "s.setrole WHERE r.rolname = :r AND s.setdatabase = (SELECT oid FROM pg_database "
        "WHERE datname = current_database())"), {"r": ANALYST_ROLE}).scalars()
    pairs = (row.split("=", 1) for row in rows)
    return {k: v for k, v in pairs if k in LIMIT_NAMES}


def login_members(conn: Connection) -> list[str]:
    """Analyst logins: roles that can log in and are members of ser_analyst (not superusers)."""
    return list(conn.execute(text(
        "SELECT m.rolname FROM pg_roles m WHERE m.rolcanlogin AND NOT m.rolsuper "
        "AND pg_has_role(m.oid, :r, 'MEMBER') AND m.rolname <> :r ORDER BY 1"),
        {"r": ANALYST_ROLE}).scalars())


# Each role's settings of our limits as a session in this database would see them, in
# PostgreSQL's order of precedence: role in this database, role everywhere, this database.
_EFFECTIVE_SQL = text("""
WITH here AS (SELECT oid FROM pg_database WHERE datname = current_database()),
settings AS (
    SELECT s.setrole, s.setdatabase, split_part(c, '=', 1) AS name,
           substr(c, strpos(c, '=') + 1) AS value
    FROM pg_db_role_setting s, unnest(s.setconfig) AS c
    WHERE s.setdatabase IN (0, (SELECT oid FROM here)))
SELECT r.rolname AS role, n.name,
       coalesce(
           (SELECT value FROM settings s WHERE s.setrole = r.oid AND s.name = n.name
              AND s.setdatabase = (SELECT oid FROM here)),
           (SELECT value FROM settings s WHERE s.setrole = r.oid AND s.name = n.name
              AND s.setdatabase = 0),
           (SELECT value FROM settings s WHERE s.setrole = 0 AND s.name = n.name
              AND s.setdatabase = (SELECT oid FROM here)),
           (SELECT boot_val || coalesce(unit, '') FROM pg_settings p WHERE p.name = n.name)
       ) AS value,
       EXISTS (SELECT 1 FROM settings s WHERE s.setrole = r.oid AND s.name = n.name
                 AND s.setdatabase = 0) AS role_wide
FROM pg_roles r CROSS JOIN unnest(CAST(:names AS text[])) AS n(name)
WHERE r.rolname = ANY(CAST(:roles AS text[]))
""")


def effective_limits(conn: Connection, roles: list[str]) -> dict[str, dict[str, str]]:
    """``{role: {limit: value}}``: what a new session of each role in this database gets."""
    if not roles:
        return {}
    rows = conn.execute(_EFFECTIVE_SQL, {"names": list(LIMIT_NAMES), "roles": roles}).all()
    found: dict[str, dict[str, str]] = {role: {} for role in roles}
    for row in rows:
        found[row.role][row.name] = row.value
    return found


def set_limits(conn: Connection, role: str, limits: dict[str, str]) -> None:
    """``ALTER ROLE role IN DATABASE <this> SET`` each of ``limits``."""
    database = conn.execute(text("SELECT current_database()")).scalar_one()
    for name, value in limits.items():
        if name not in LIMIT_NAMES:
            raise ValueError(f"unknown limit {name!r}")
        # the role and database quoted as identifiers, the value as a literal, by the server
        run_built(conn, conn.execute(text(
            f"SELECT format('ALTER ROLE %I IN DATABASE %I SET {name} = %L', :role, :db, "
            ":value)"), {"role": role, "db": database, "value": value}).scalar_one())


def run_built(conn: Connection, sql: str) -> None:
    """Run a statement the server built with format(): as it is, with no bind parsing (a
    SCRAM verifier contains ':' and '$')."""
    with conn.connection.cursor() as cursor:
        cursor.execute(sql)


@dataclass(slots=True)
class PolicyReport:
    """What :func:`enforce_analyst_policy` changed: ``restored`` lists ``login.limit`` values an
    analyst had changed; ``skipped`` the steps this database role may not take."""

    logins: list[str] = field(default_factory=list)
    restored: list[str] = field(default_factory=list)
    temp_revoked: bool = False
    skipped: list[str] = field(default_factory=list)


def _savepoint(conn: Connection, what: str, report: PolicyReport, sql: str) -> bool:
    """Run ``sql`` in a savepoint; a privilege this role lacks is noted, not raised."""
    try:
        with conn.begin_nested():
            run_built(conn, sql)
        return True
    except Exception as exc:  # noqa: BLE001 - e.g. not the owner of the database
        detail = str(getattr(exc, "orig", exc)).strip().splitlines()[0]
        report.skipped.append(f"{what}: {detail}")
        return False


def enforce_analyst_policy(conn: Connection) -> PolicyReport:
    """Put every analyst login's limits back to ser_analyst's and keep temp tables from them.

    For each login whose effective value of a limit differs from ser_analyst's (she ran
    ``ALTER ROLE … SET`` on herself), her role-wide setting of it is reset and the value is set
    again for her role in this database. ``TEMPORARY`` on this database is revoked from
    ``PUBLIC`` and granted to the role running this (the scorer). Steps this role may not take
    (a real server where it does not own the database) are listed in ``skipped``.
    """
    report = PolicyReport()
    if not conn.execute(text("SELECT 1 FROM pg_roles WHERE rolname = :r"),
                        {"r": ANALYST_ROLE}).first():
        return report
    wanted = analyst_limits(conn)
    report.logins = login_members(conn)
    database = conn.execute(text("SELECT current_database()")).scalar_one()
    current = effective_limits(conn, report.logins)
    role_wide = {(r.role, r.name) for r in conn.execute(
        _EFFECTIVE_SQL, {"names": list(LIMIT_NAMES), "roles": report.logins}) if r.role_wide}
    for login in report.logins:
        for name, value in wanted.items():
            if (login, name) in role_wide:
                _savepoint(conn, f"reset {login}.{name}", report, conn.execute(text(
                    f"SELECT format('ALTER ROLE %I RESET {name}', :r)"),
                    {"r": login}).scalar_one())
            if current[login].get(name) != value or (login, name) in role_wide:
                report.restored.append(f"{login}.{name}={current[login].get(name)}")
                _savepoint(conn, f"set {login}.{name}", report, conn.execute(text(
                    f"SELECT format('ALTER ROLE %I IN DATABASE %I SET {name} = %L', :r, :db, "
                    ":v)"), {"r": login, "db": database, "v": value}).scalar_one())
    if report.restored:
        log.warning("analyst limits changed by their logins were restored: %s",
                    ", ".join(report.restored))
    temp_public = conn.execute(text(
        "SELECT has_database_privilege('public', current_database(), 'TEMPORARY') "
        "OR EXISTS (SELECT 1 FROM pg_roles r WHERE r.rolname = :r "
        "AND has_database_privilege(r.oid, current_database(), 'TEMPORARY'))"),
        {"r": ANALYST_ROLE}).scalar_one()
    if temp_public:
        grant = conn.execute(text(
            "SELECT format('GRANT TEMPORARY ON DATABASE %I TO %I', :db, current_user)"),
            {"db": database}).scalar_one()
        revoke = conn.execute(text(
            "SELECT format('REVOKE TEMPORARY ON DATABASE %I FROM PUBLIC, %I', :db, :r)"),
            {"db": database, "r": ANALYST_ROLE}).scalar_one()
        report.temp_revoked = (_savepoint(conn, "grant TEMPORARY", report, grant)
                               and _savepoint(conn, "revoke TEMPORARY", report, revoke))
    return report
