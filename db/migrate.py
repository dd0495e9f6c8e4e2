"""Programmatic Alembic: used by the CLI (`ser db ...`), auto-migration and tests."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Engine, text

if TYPE_CHECKING:
    from alembic.config import Config

# Alembic is imported only when migrating or inspecting scripts: the schema check every CLI
# command makes first reads the version files and one row, without it.

ROOT = Path(__file__).resolve().parent.parent
# Advisory lock key so two processes starting at once do not migrate concurrently.
_MIGRATION_LOCK = 0x5E12_0001


def include_object(
    obj: object, name: str | None, type_: str, reflected: bool, compare_to: object
) -> bool:
    """Autogenerate filter: views in the ``analytics`` schema are hand-written migrations."""
    return getattr(obj, "schema", None) != "analytics"


def alembic_config(url: str | None = None) -> Config:
    from alembic.config import Config

    ini = ROOT / "alembic.ini"
    cfg = Config(str(ini)) if ini.exists() else Config()
    cfg.set_main_option("script_location", str(ROOT / "db" / "migrations"))
    if url:
        cfg.attributes["url"] = url
    return cfg


def head_revision() -> str:
    from alembic.script import ScriptDirectory

    heads = ScriptDirectory.from_config(alembic_config()).get_heads()
    if len(heads) != 1:
        raise RuntimeError(f"expected one migration head, found {heads}")
    return heads[0]


def current_revision(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


_REVISION_RE = re.compile(r"^(down_revision|revision)\b[^=]*=\s*['\"]?([0-9a-f]+|None)",
                          re.MULTILINE)


def script_head() -> str | None:
    """The head revision read straight from the version files (no alembic import); None when
    the scripts are not one linear history (then callers ask alembic)."""
    revisions, parents = set(), set()
    for path in (ROOT / "db" / "migrations" / "versions").glob("*.py"):
        found = dict(_REVISION_RE.findall(path.read_text()))
        if "revision" not in found:
            return None
        revisions.add(found["revision"])
        parents.add(found.get("down_revision", "None"))
    heads = revisions - parents
    return heads.pop() if len(heads) == 1 else None


def _stamped_revisions(engine: Engine) -> list[str]:
    with engine.connect() as conn:
        exists = conn.execute(text("SELECT to_regclass('alembic_version') IS NOT NULL")).scalar()
        if not exists:
            return []
        return [r[0] for r in conn.execute(text("SELECT version_num FROM alembic_version"))]


def upgrade(engine: Engine, revision: str = "head") -> None:
    with engine.begin() as conn:
        conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _MIGRATION_LOCK})
        from alembic import command

        cfg = alembic_config()
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)


def downgrade(engine: Engine, revision: str) -> None:
    with engine.begin() as conn:
        conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _MIGRATION_LOCK})
        from alembic import command

        cfg = alembic_config()
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, revision)


def ensure_migrated(engine: Engine) -> None:
    """Bring the schema to head if it is behind (cheap check first: one query, no alembic)."""
    head = script_head()
    if head is not None and _stamped_revisions(engine) == [head]:
        return
    if current_revision(engine) != head_revision():
        upgrade(engine)
