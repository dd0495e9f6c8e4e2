"""`ser serve` refuses a server without a scheduler, installs as a service; the server's log and
health are read the way `ser prefect status` reports them."""

from __future__ import annotations

import configparser
import os
import stat
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ser.prefect_server import check_server, last_server_error
from ser.service import install_service

# What the scheduler wrote on every loop under SQLAlchemy 2.1 (trimmed).
SCHEDULER_FAILURE = """\
16:40:01.101 | INFO    | prefect.server.services.scheduler - Scheduled 0 runs.
16:40:02.734 | ERROR   | prefect.server.services.telemetry - Failed to send telemetry: [Errno -2]
16:40:05.512 | ERROR   | prefect.server.services.scheduler - Unexpected error in: Scheduler
Traceback (most recent call last):
  File "prefect/server/services/scheduler.py", line 180, in run_once
    await self._insert_scheduled_flow_runs(session=session, runs=runs)
  File "prefect/server/models/deployments.py", line 812, in _insert_scheduled_flow_runs
    await session.execute(insert_stmt, runs)
sqlalchemy.exc.InvalidRequestError: Can't evaluate bulk DML statement; please supply a bulk_dml decorated function
16:40:06.001 | INFO    | uvicorn.access - 127.0.0.1 "POST /api/flows/filter" 200
"""


def test_last_server_error_finds_the_scheduler_failure(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    log.write_text(SCHEDULER_FAILURE)
    error = last_server_error(log)
    assert error is not None
    assert error.logger == "prefect.server.services.scheduler"
    assert error.time == "16:40:05.512"
    assert error.exception is not None and error.exception.startswith(
        "sqlalchemy.exc.InvalidRequestError: Can't evaluate bulk DML")


def test_telemetry_noise_is_not_a_server_error(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    log.write_text("\n".join(SCHEDULER_FAILURE.splitlines()[:2]) + "\n")
    assert last_server_error(log) is None
    assert last_server_error(tmp_path / "missing.log") is None


def test_check_server_says_when_nothing_answers(tmp_path: Path) -> None:
    health = check_server("http://127.0.0.1:9/api", source="test")
    assert not health.healthy and health.problems and "not reachable" in health.problems[0]


@pytest.fixture()
def serve_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    import ser.commands.serve
    from config import get_settings

    monkeypatch.setenv("SER_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    (tmp_path / "run-systemd").mkdir()  # systemd is running, as on a host that can take units
    monkeypatch.setattr(ser.commands.serve, "SYSTEMD_RUNTIME", tmp_path / "run-systemd")
    get_settings.cache_clear()
    yield tmp_path
    get_settings.cache_clear()


def test_serve_refuses_an_ephemeral_only_server(serve_env: Path, cli_env: dict[str, str],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from config import get_settings
    from ser.cli import app

    monkeypatch.setenv("SER_PREFECT_SERVER", "ephemeral")
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    get_settings.cache_clear()
    result = CliRunner().invoke(app, ["serve", "--cron", "* * * * *"])
    assert result.exit_code == 2, result.output
    assert "schedules never fire" in result.output
    assert not (Path(cli_env["SER_HOME"]) / "prefect" / "server.json").exists()


def test_serve_rejects_a_bad_cron(serve_env: Path) -> None:
    from ser.cli import app

    result = CliRunner().invoke(app, ["serve", "--install", "--cron", "every night",
                                      "--unit-dir", str(serve_env / "units")])
    assert result.exit_code == 2 and "invalid cron expression" in result.output
    assert not (serve_env / "units").exists()


def test_install_writes_a_unit_and_a_private_environment(serve_env: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from ser.cli import app

    monkeypatch.setenv("DATABASE_URL", "postgresql+psycopg2://ser:s3cret@db:5432/ser")
    units = serve_env / "units" / "systemd" / "user"
    inbox = serve_env / "in box"  # a space: systemd must get it as one argument
    result = CliRunner().invoke(app, ["serve", "--install", "--cron", "30 1 * * *", "--inbox",
                                      str(inbox), "--unit-dir", str(units), "--workers", "3"])
    assert result.exit_code == 0, result.output
    assert "systemctl --user enable --now ser-nightly.service" in result.output
    unit = configparser.ConfigParser(interpolation=None, strict=False)
    unit.read(units / "ser-nightly.service")
    exec_start = unit["Service"]["ExecStart"]
    assert " -m ser serve --cron \"30 1 * * *\" --inbox " in exec_start
    assert f'"{inbox.resolve()}"' in exec_start and "--workers 3" in exec_start
    assert unit["Service"]["Restart"] == "always"
    assert unit["Install"]["WantedBy"] == "default.target"
    env_file = Path(unit["Service"]["EnvironmentFile"])
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600  # it holds the database password
    env = env_file.read_text()
    assert "DATABASE_URL=postgresql+psycopg2://ser:s3cret@db:5432/ser" in env
    assert f"SER_HOME={serve_env / 'home'}" in env


def test_install_says_whom_the_service_runs_as(serve_env: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from ser.cli import app

    units = serve_env / "units" / "systemd" / "user"
    result = CliRunner().invoke(app, ["serve", "--install", "--unit-dir", str(units)])
    assert result.exit_code == 0, result.output
    assert "it runs as " in result.output and "(a user unit)" in result.output
    assert "warning" not in result.output

    monkeypatch.setattr(os, "geteuid", lambda: 0)  # root writes a system unit, with no User=
    etc = serve_env / "etc"
    result = CliRunner().invoke(app, ["serve", "--install", "--unit-dir", str(etc)])
    assert result.exit_code == 0, result.output
    warning = next(line for line in result.output.splitlines() if line.startswith("warning:"))
    assert "ser-nightly.service runs as root" in warning and "add User=NAME under [Service]" in warning
    assert "User=" not in (etc / "ser-nightly.service").read_text()


def test_install_refuses_where_systemd_is_not_running(serve_env: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    import ser.commands.serve
    from ser.cli import app

    monkeypatch.setattr(ser.commands.serve, "SYSTEMD_RUNTIME", serve_env / "no-systemd")
    units = serve_env / "units"
    result = CliRunner().invoke(app, ["serve", "--install", "--unit-dir", str(units)])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: systemd is not running on this host")
    assert "--force" in lines[0] and not units.exists()
    forced = CliRunner().invoke(app, ["serve", "--install", "--unit-dir", str(units), "--force"])
    assert forced.exit_code == 0, forced.output
    assert (units / "ser-nightly.service").exists()


def test_install_as_root_targets_the_system(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    service = install_service(serve_args=["--cron", "0 2 * * *"], home=tmp_path / "home",
                              unit_dir=tmp_path / "etc", environ={"PATH": "/usr/bin"})
    assert not service.user_unit
    assert "multi-user.target" in service.unit_path.read_text()
    assert service.next_steps()[0] == "systemctl daemon-reload"
