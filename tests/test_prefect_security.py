"""No local user steers `ser serve` (issue 25 item 6): the background Prefect API wants the
credentials only its owner can read, and a flow run's parameters cannot choose the folder the
nightly flow reads or creates."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from etl.runs.inbox_confinement import InboxError, confined_inbox
from ser.prefect_server import (
    auth_file,
    auth_header,
    auth_string,
    running_server,
    start_server,
    stop_server,
)


def _post(url: str, body: dict[str, object], headers: dict[str, str] | None = None) -> int:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"content-type": "application/json",
                                              **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


@pytest.mark.slow
def test_the_background_api_refuses_callers_without_the_owners_credentials(
        tmp_path: Path) -> None:
    home = tmp_path / "prefect"
    info = start_server(home)
    try:
        secret = auth_file(home)
        assert stat.S_IMODE(secret.stat().st_mode) == 0o600
        assert secret.stat().st_uid == os.getuid()
        api = info.api_url
        # what `nobody` did: create a run of a deployment, list deployments
        assert _post(f"{api}/deployments/00000000-0000-0000-0000-000000000000/create_flow_run",
                     {"parameters": {"inbox": "/tmp"}}) == 401
        assert _post(f"{api}/deployments/filter", {}) == 401
        assert _post(f"{api}/deployments/filter", {}, auth_header("ser:guessed")) == 401
        assert _post(f"{api}/deployments/filter", {}, auth_header(auth_string(home))) == 200
        with urllib.request.urlopen(f"{api}/health", timeout=10) as response:  # probes stay open
            assert response.status == 200
    finally:
        stop_server(home)


@pytest.mark.slow
def test_a_background_server_without_credentials_is_replaced(tmp_path: Path) -> None:
    """One started by an earlier version (no authentication) is not reused."""
    from ser.prefect_server import ServerInfo, _free_port, _healthy, _state_file

    home = tmp_path / "prefect"
    home.mkdir()
    port = _free_port()
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    for name in ("PREFECT_API_URL", "PREFECT_SERVER_API_AUTH_STRING", "PREFECT_API_AUTH_STRING"):
        env.pop(name, None)
    process = subprocess.Popen(
        [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port",
         str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
        start_new_session=True)
    try:
        old = ServerInfo(process.pid, port)
        for _ in range(600):
            if _healthy(old) or process.poll() is not None:
                break
            time.sleep(0.25)
        assert _healthy(old)
        _state_file(home).write_text(json.dumps({"pid": old.pid, "port": old.port}))
        new = start_server(home)
        try:
            assert new != old and process.wait(timeout=30) is not None
            assert _post(f"{new.api_url}/deployments/filter", {}) == 401
        finally:
            stop_server(home)
    finally:
        if process.poll() is None:
            process.kill()
    assert running_server(home) is None


def test_a_run_parameter_cannot_choose_or_create_the_inbox(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    assert confined_inbox(None, configured=inbox) == inbox.resolve() and inbox.is_dir()
    (inbox / "2024-03-01").mkdir()
    assert confined_inbox(str(inbox / "2024-03-01"), configured=inbox) == \
        (inbox / "2024-03-01").resolve()
    elsewhere = tmp_path / "theirs"
    elsewhere.mkdir()
    (inbox / "link").symlink_to(elsewhere)
    for requested in (elsewhere, tmp_path / "new" / "dirs", inbox / "link", inbox / "..",
                      "relative/path", inbox / "missing"):
        with pytest.raises(InboxError, match="inbox"):
            confined_inbox(str(requested), configured=inbox)
    assert not (tmp_path / "new").exists() and not (inbox / "missing").exists()


def test_the_nightly_flow_refuses_an_inbox_a_caller_chose(
        cli_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The flow as the served deployment runs it: parameters from the API, settings its own."""
    from prefect.testing.utilities import prefect_test_harness

    from config import get_settings
    from flows.nightly import nightly_flow

    monkeypatch.setenv("SER_INBOX", str(tmp_path / "inbox"))
    get_settings.cache_clear()
    target = tmp_path / "chosen" / "by" / "caller"
    with prefect_test_harness(server_startup_timeout=120):
        state = nightly_flow(inbox=str(target), return_state=True)
        assert state.is_failed()
        with pytest.raises(InboxError, match="not the configured inbox"):
            state.result()
    assert not (tmp_path / "chosen").exists()
    assert set(nightly_flow.parameters.properties) == {"inbox", "model_ref", "workers"}
