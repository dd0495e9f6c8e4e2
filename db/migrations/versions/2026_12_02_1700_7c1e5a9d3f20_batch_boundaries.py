"""batch boundaries: analyst session limits

Revision ID: 7c1e5a9d3f20
Revises: 5e7a0c1d2b3f
Create Date: 2026-12-02 17:00:00+00:00

Sets ``statement_timeout``, ``idle_in_transaction_session_timeout`` and ``temp_file_limit`` for
``ser_analyst`` *in this database* (``ALTER ROLE ... IN DATABASE``: other databases on the
server keep their own values, and downgrade resets only this one). PostgreSQL applies a role's
settings only to sessions that log in as that role, never through membership, so the same
values go to every login that is a member of ``ser_analyst`` (``ser db analyst add`` does the
same for new logins; ``ser db analyst limits`` changes them). ``temp_file_limit`` needs a
superuser (or ``GRANT SET ON PARAMETER``): without one it is skipped with a notice.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "7c1e5a9d3f20"
down_revision: str | None = "5e7a0c1d2b3f"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ROLE = "ser_analyst"
# Defaults (docs/operations.md): long enough for a month of daily_trends, short enough that a
# runaway join or a forgotten BEGIN cannot hold the scorer's tables for an evening.
LIMITS = {
    "statement_timeout": "5min",
    "idle_in_transaction_session_timeout": "10min",
    "temp_file_limit": "2GB",
}


def _apply(settings: dict[str, str | None]) -> str:
    """A DO block setting (or, with None, resetting) each parameter for ser_analyst and its
    login members in the current database; a parameter the migrating user may not set, or a
    concurrent ALTER on the shared role, gives a notice instead of failing the upgrade."""
    statements = []
    for name, value in settings.items():
        action = f"SET {name} = %L" if value is not None else f"RESET {name}"
        args = f", r.rolname, current_database(), {value!r}" if value is not None else \
            ", r.rolname, current_database()"
        statements.append(f"""
        BEGIN
            EXECUTE format('ALTER ROLE %I IN DATABASE %I {action}'{args});
        EXCEPTION WHEN insufficient_privilege OR internal_error THEN
            RAISE NOTICE 'could not change {name} for role %: %', r.rolname, SQLERRM;
        END;""")
    body = "".join(statements)
    return f"""
DO $$
DECLARE r record;
BEGIN
    FOR r IN
        SELECT rolname FROM pg_roles WHERE rolname = '{ROLE}'
        UNION
        SELECT m.rolname FROM pg_auth_members am
        JOIN pg_roles g ON g.oid = am.roleid AND g.rolname = '{ROLE}'
        JOIN pg_roles m ON m.oid = am.member AND m.rolcanlogin AND NOT m.rolsuper
    LOOP{body}
    END LOOP;
END
$$
"""


def upgrade() -> None:
    op.execute(_apply(dict(LIMITS)))


def downgrade() -> None:
    op.execute(_apply(dict.fromkeys(LIMITS)))
