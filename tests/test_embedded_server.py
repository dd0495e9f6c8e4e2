"""The embedded server asks every login for a password; the owner's lives in a 0600 file."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import psycopg2
import pytest
from sqlalchemy import text

from db.embedded import (
    EmbeddedServerError,
    ensure_password_file,
    password_file,
    start_embedded,
    stop_embedded,
)
from db.engine import make_engine


@pytest.fixture(scope="module")
def embedded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    pgdata = tmp_path_factory.mktemp("embedded") / "pgdata"
    url = start_embedded(pgdata)
    try:
        yield pgdata, url
    finally:
        stop_embedded(pgdata)


def test_the_owner_logs_in_through_the_url_and_nobody_without_the_password(
        embedded: tuple[Path, str]) -> None:
    pgdata, url = embedded
    passfile = password_file(pgdata)
    assert parse_qs(urlsplit(url).query)["passfile"] == [str(passfile)]
    assert passfile.stat().st_mode & 0o777 == 0o600
    assert passfile.stat().st_uid == os.getuid()
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            assert conn.execute(text("SELECT current_user")).scalar_one() == "postgres"
    finally:
        engine.dispose()
    socket_dir = parse_qs(urlsplit(url).query)["host"][0]
    # what initdb's trust lines let anyone who reaches the socket do
    with pytest.raises(psycopg2.OperationalError, match="password"):
        psycopg2.connect(host=socket_dir, dbname="ser", user="postgres").close()
    with pytest.raises(psycopg2.OperationalError, match="password"):
        psycopg2.connect(host=socket_dir, dbname="ser", user="postgres",
                         password="guess").close()


def test_a_second_start_reuses_the_server_and_its_password(embedded: tuple[Path, str]) -> None:
    pgdata, url = embedded
    before = password_file(pgdata).read_text()
    assert start_embedded(pgdata) == url
    assert password_file(pgdata).read_text() == before


def test_a_password_file_others_can_read_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "pgdata.pgpass"
    password = ensure_password_file(path)
    assert len(password) >= 32 and ensure_password_file(path) == password
    path.chmod(0o644)
    with pytest.raises(EmbeddedServerError, match="chmod 600"):
        ensure_password_file(path)


def test_a_data_directory_still_on_trust_gets_a_password(tmp_path: Path) -> None:
    """A server initialised before passwords (initdb's trust lines, no password file) is
    converted on its next start."""
    pgdata = tmp_path / "pgdata"
    url = start_embedded(pgdata)
    try:
        engine = make_engine(url)
        try:
            (pgdata / "pg_hba.conf").write_text("local all all trust\n")
            with engine.connect() as conn:
                conn.execute(text("SELECT pg_reload_conf()"))
        finally:
            engine.dispose()
        password_file(pgdata).unlink()
        socket_dir = parse_qs(urlsplit(url).query)["host"][0]
        psycopg2.connect(host=socket_dir, dbname="ser", user="postgres").close()  # trusted

        again = start_embedded(pgdata)
        assert password_file(pgdata).exists()
        with pytest.raises(psycopg2.OperationalError, match="password"):
            psycopg2.connect(host=socket_dir, dbname="ser", user="postgres").close()
        engine = make_engine(again)
        try:
            with engine.connect() as conn:
                assert conn.execute(text("SELECT 1")).scalar_one() == 1
        finally:
            engine.dispose()
    finally:
        stop_embedded(pgdata)
