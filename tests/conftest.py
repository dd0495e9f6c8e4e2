"""Test database: TEST_DATABASE_URL's server if set, else the embedded one; a fresh database per run.

Fixtures
--------
engine      session-wide engine on a freshly created, migrated database
db_session  a Session inside a transaction that is rolled back after the test (fast isolation)
clean_db    for code that commits itself (flows, CLI): the URL, with every data table emptied after
cli_env     environment for invoking the CLI in-process against the test database

Markers
-------
db          added here to every test whose fixtures reach ``database_url`` (every fixture
            above that touches the database does): the tests that can see which PostgreSQL
            they run on. ``.ci/run`` reruns only ``db and not slow`` against a server.
slow        set by the modules (a Dask cluster, a Prefect server, the whole demo): left out of
            the README's test command; ``.ci/run`` runs them on their own after it.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import Engine, make_url, text
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from db.embedded import start_embedded
from db.engine import make_engine
from db.migrate import upgrade
from db.models import Base
from etl.synthetic.clips import ClipBank
from etl.synthetic.history import make_feature_set, make_model_version

# CLI commands in tests use Prefect's ephemeral mode (or a harness), never a lingering background
# server; tests/test_prefect_server.py covers the background server on its own.
os.environ.setdefault("SER_PREFECT_SERVER", "ephemeral")
# Prefect gives its ephemeral server 20 s to start; on two busy cores (the suite runs Prefect
# subprocesses side by side with extraction) it has been seen to need more.
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")

# Tables whose rows are seeded by migrations; never truncated between tests.
SEEDED_TABLES = {"label_schemes", "label_scheme_classes"}


def _server_url() -> str:
    url = os.environ.get("TEST_DATABASE_URL")
    if url:
        return url
    home = Path(os.environ.get("SER_TEST_HOME", Path.home() / ".cache" / "ser-test")).expanduser()
    return start_embedded(home / "pgdata", database="postgres")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark ``db`` the tests that use the test database: a test without ``database_url``
    among its fixtures cannot tell one PostgreSQL server from another."""
    for item in items:
        if "database_url" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.db)


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    server = make_engine(_server_url(), isolation_level="AUTOCOMMIT")
    name = f"ser_test_{uuid.uuid4().hex[:10]}"
    with server.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(str(server.url.render_as_string(hide_password=False))).set(database=name)
    yield url.render_as_string(hide_password=False)
    with server.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    server.dispose()


@pytest.fixture(scope="session")
def engine(database_url: str) -> Iterator[Engine]:
    eng = make_engine(database_url)
    upgrade(eng)
    yield eng
    eng.dispose()


@pytest.fixture()
def db_session(engine: Engine) -> Iterator[Session]:
    with engine.connect() as conn:
        outer = conn.begin()
        session = Session(bind=conn, join_transaction_mode="create_savepoint", expire_on_commit=False)
        try:
            yield session
        finally:
            session.close()
            outer.rollback()


def truncate_all(engine: Engine) -> None:
    tables = [t.name for t in Base.metadata.sorted_tables if t.name not in SEEDED_TABLES]
    with engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE"))


@pytest.fixture()
def clean_db(engine: Engine, database_url: str) -> Iterator[str]:
    truncate_all(engine)
    yield database_url
    truncate_all(engine)


@contextmanager
def _cli_settings(database_url: str, home: Path,
                  monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    """Settings (and their cached engine) pointed at the test database for in-process CLI runs."""
    from config import get_settings
    from db.engine import cached_engine

    env = {"DATABASE_URL": database_url, "SER_HOME": str(home)}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    for key in ("SER_RULES", "SER_ESCALATION_RULES"):  # never a developer's own rules
        monkeypatch.delenv(key, raising=False)
    get_settings.cache_clear()
    try:
        yield env
    finally:
        get_settings.cache_clear()
        cached_engine.cache_clear()


@pytest.fixture()
def cli_env(clean_db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    with _cli_settings(clean_db, tmp_path / "ser-home", monkeypatch) as env:
        yield env


@pytest.fixture()
def db_cli(database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[CliRunner]:
    """The CLI on the test database *keeping* its rows (cli_env empties them): for modules that
    set data up once and run commands on it."""
    with _cli_settings(database_url, tmp_path / "ser-home", monkeypatch):
        yield CliRunner()


@pytest.fixture()
def scratch_engine(database_url: str) -> Iterator[Engine]:
    """A separate empty database (for migration round trips that must not disturb the others)."""
    url = make_url(database_url)
    admin = make_engine(url.set(database="postgres").render_as_string(hide_password=False),
                        isolation_level="AUTOCOMMIT")
    name = f"ser_scratch_{uuid.uuid4().hex[:8]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    eng = make_engine(url.set(database=name).render_as_string(hide_password=False))
    yield eng
    eng.dispose()
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture()
def model_version(db_session: Session) -> int:
    """A model version without metrics, for tests that insert scored history rows."""
    fs = make_feature_set(db_session)
    return make_model_version(db_session, clip_ids=[], feature_set_id=fs, with_metrics=False)


@pytest.fixture(scope="module")
def bank() -> ClipBank:
    """Synthetic clips of four actors, one per emotion: tiny models' corpus and calls' voices."""
    return ClipBank.synthetic(actors=range(1, 5), per_emotion=1)


@pytest.fixture(scope="module")
def model_id(engine: Engine, bank: ClipBank) -> Iterator[int]:
    """A tiny telephony model trained on ``bank``, the production alias, on an emptied
    database for the module (emptied again after it)."""
    from db.engine import session_scope
    from tests.utils.nightly import train_tiny_model

    truncate_all(engine)
    with session_scope(engine) as session:
        version_id = train_tiny_model(session, bank=bank)
    yield version_id
    truncate_all(engine)
