"""The background Prefect server: started once, reused, stopped; flows run against it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from ser.prefect_server import auth_string, running_server, start_server, stop_server


@pytest.mark.slow
def test_server_is_started_once_reused_and_stopped(tmp_path: Path) -> None:
    home = tmp_path / "prefect"
    assert running_server(home) is None
    first = start_server(home)
    try:
        assert running_server(home) == first
        assert start_server(home) == first  # reused, not a second server
        flow = (
            "from prefect import flow\n"
            "@flow\n"
            "def ping() -> int:\n"
            "    return 41 + 1\n"
            "print(ping())\n"
        )
        result = subprocess.run(
            [sys.executable, "-c", flow], check=False, capture_output=True, text=True, timeout=120,
            env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "PREFECT_HOME": str(home),
                 "PREFECT_API_URL": first.api_url, "PREFECT_LOGGING_LEVEL": "ERROR",
                 "PREFECT_API_AUTH_STRING": auth_string(home),
                 "PREFECT_SERVER_ALLOW_EPHEMERAL_MODE": "false"})
        assert result.returncode == 0, result.stderr[-2000:]
        assert result.stdout.strip().endswith("42")
    finally:
        assert stop_server(home)
    assert running_server(home) is None
    assert not stop_server(home)


def test_cli_flows_run_without_heartbeats_unless_the_user_asks(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Prefect's heartbeat thread made every flow end with up to 1 s of idle; `ser` commands
    turn it off, but a frequency the user set wins (either of Prefect's names for it)."""
    from prefect.settings import get_current_settings

    from ser.runtime import flow_settings

    for name in ("PREFECT_FLOWS_HEARTBEAT_FREQUENCY", "PREFECT_RUNNER_HEARTBEAT_FREQUENCY"):
        monkeypatch.delenv(name, raising=False)
    default = get_current_settings().flows.heartbeat_frequency
    assert default is not None  # Prefect's own default is on
    with flow_settings():
        assert get_current_settings().flows.heartbeat_frequency is None
    assert get_current_settings().flows.heartbeat_frequency == default
    monkeypatch.setenv("PREFECT_RUNNER_HEARTBEAT_FREQUENCY", "45")  # read by Prefect at import
    with flow_settings():  # left to Prefect
        assert get_current_settings().flows.heartbeat_frequency == default
