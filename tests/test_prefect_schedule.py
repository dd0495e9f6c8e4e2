"""The nightly schedule fires on the background Prefect server, and Prefect's own clients work.

One background server and one ``ser serve --cron "* * * * *"`` process are shared by the module:
the scheduler must create a run by itself (``auto_scheduled``), the served process must run it to
``Completed``, and the batch must be in the database with scored calls. Prefect's CLI listings and
its UI's runs page are then checked against the same server, whose log must hold no traceback.
These failed together when the pinned SQLAlchemy broke Prefect's scheduler and the pinned FastAPI
rejected the ``null`` limits Prefect's clients send.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, text
from typer.testing import CliRunner

from db.engine import session_scope
from etl.synthetic.calls import generate_calls
from etl.synthetic.clips import ClipBank
from ser.prefect_server import (
    auth_header,
    auth_string,
    last_server_error,
    start_server,
    stop_server,
)
from tests.conftest import truncate_all
from tests.utils.nightly import train_tiny_model

pytestmark = pytest.mark.slow

DEPLOYMENT = "nightly-test"
# Waiting for the next minute boundary, the served process's start and the run itself.
FIRE_TIMEOUT_S = 300.0


def _post(api_url: str, path: str, body: dict[str, Any], *, auth: str) -> Any:
    request = urllib.request.Request(f"{api_url}/{path}", data=json.dumps(body).encode(),
                                     headers={"content-type": "application/json",
                                              **auth_header(auth)})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


@dataclass
class Scheduled:
    api_url: str
    home: Path
    log: Path
    env: dict[str, str]
    run: dict[str, Any]
    engine: Engine
    serve_output: str


@pytest.fixture(scope="module")
def scheduled(engine: Engine, database_url: str,
              tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scheduled]:
    root = tmp_path_factory.mktemp("schedule")
    ser_home = root / "ser-home"
    prefect_home = ser_home / "prefect"
    truncate_all(engine)
    with session_scope(engine) as session:
        train_tiny_model(session)
    inbox = root / "inbox"
    bank = ClipBank.synthetic(actors=range(1, 5), per_emotion=1)
    generate_calls(inbox / "2024-03-01", n_calls=2, minutes=0.15, bank=bank, seed=51)

    server = start_server(prefect_home)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update({"DATABASE_URL": database_url, "SER_HOME": str(ser_home),
                "SER_PREFECT_SERVER": "local", "SER_WORKERS": "1", "DO_NOT_TRACK": "1",
                "PREFECT_SERVER_ANALYTICS_ENABLED": "false"})
    serve_log = (root / "serve.log").open("wb")
    # Started as a user would: no PREFECT_API_URL, so `ser serve` must find the background server.
    process = subprocess.Popen(
        [sys.executable, "-m", "ser", "serve", "--cron", "* * * * *", "--inbox", str(inbox),
         "--name", DEPLOYMENT], env=env, stdout=serve_log, stderr=subprocess.STDOUT)
    run: dict[str, Any] | None = None
    try:
        deadline = time.monotonic() + FIRE_TIMEOUT_S
        while time.monotonic() < deadline and process.poll() is None:
            runs = _post(server.api_url, "flow_runs/filter", {
                "deployments": {"name": {"any_": [DEPLOYMENT]}},
                "flow_runs": {"state": {"type": {"any_": ["COMPLETED", "FAILED", "CRASHED"]}}},
                "limit": None, "sort": None}, auth=auth_string(prefect_home))
            if runs:
                run = runs[0]
                break
            time.sleep(3)
        output = (root / "serve.log").read_text(errors="replace")
        assert process.poll() is None, f"ser serve exited: {output[-3000:]}"
        # Served on the background server only, never on a temporary one beside it.
        assert "ephemeral" not in output and "temporary server" not in output, output[:3000]
        assert run is not None, (f"no scheduled run finished in {FIRE_TIMEOUT_S:.0f} s",
                                 output[-3000:])
        yield Scheduled(server.api_url, prefect_home, prefect_home / "server.log",
                        {**env, "PREFECT_API_URL": server.api_url, "PREFECT_HOME":
                         str(prefect_home), "PREFECT_API_AUTH_STRING": auth_string(prefect_home)},
                        run, engine, output)
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
        serve_log.close()
        stop_server(prefect_home)
        truncate_all(engine)


def test_the_scheduler_creates_a_run_that_scores_the_inbox(scheduled: Scheduled) -> None:
    run = scheduled.run
    assert run["auto_scheduled"] is True  # made by the server's scheduler, not by hand
    assert run["state_type"] == "COMPLETED", (run["state"], scheduled.serve_output[-3000:])
    with scheduled.engine.connect() as conn:
        batches = conn.execute(text(
            "SELECT b.n_calls, b.n_scored, b.status, count(s.call_id) AS summaries "
            "FROM batches b JOIN calls c ON c.batch_id = b.id "
            "LEFT JOIN call_summaries s ON s.call_id = c.id GROUP BY b.id")).all()
    assert len(batches) == 1
    n_calls, n_scored, status, summaries = batches[0]
    assert n_calls == 2 and n_scored == 2 and summaries == 2 and status == "done"


def test_prefect_cli_lists_runs_deployments_and_artifacts(scheduled: Scheduled) -> None:
    outputs = {}
    env = {**scheduled.env, "COLUMNS": "250"}  # rich truncates names in a narrow terminal
    for args in (["flow-run", "ls"], ["flow-run", "ls", "--state", "COMPLETED"],
                 ["deployment", "ls"], ["artifact", "ls"]):
        result = subprocess.run([sys.executable, "-m", "prefect", *args], env=env,
                                capture_output=True, text=True, timeout=120, check=False)
        assert result.returncode == 0, (args, result.stdout[-1500:], result.stderr[-1500:])
        outputs[" ".join(args)] = result.stdout
    assert "SCHEDULED" in outputs["flow-run ls"]  # the runs the scheduler made ahead
    assert scheduled.run["name"] in outputs["flow-run ls --state COMPLETED"]
    assert DEPLOYMENT in outputs["deployment ls"]
    assert "nightly-batch" in outputs["artifact ls"]
    log = scheduled.log.read_text(errors="replace")
    assert "Traceback" not in log, log[-3000:]
    assert last_server_error(scheduled.log) is None


def test_ser_prefect_status_reports_a_healthy_scheduler(scheduled: Scheduled,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from config import get_settings
    from ser.cli import app

    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    monkeypatch.setenv("SER_HOME", str(scheduled.home.parent))
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(app, ["prefect", "status", "--json"])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    status = json.loads(result.output)
    assert status["ok"] is True and status["healthy"] is True
    assert status["deployments"] >= 1 and status["scheduled_runs"] >= 1
    assert status["last_error"] is None and status["problems"] == []


@pytest.mark.browser
def test_prefect_ui_runs_page_lists_the_runs(scheduled: Scheduled,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    from tests import test_reports_browser
    from tests.test_reports_browser import Chromium, require_chromium

    # The UI is served on loopback: no dead proxy in front of it (the reports test needs one).
    monkeypatch.setattr(test_reports_browser, "CHROMIUM_FLAGS", [
        *(f for f in test_reports_browser.CHROMIUM_FLAGS if not f.startswith("--proxy")),
        "--no-proxy-server"])

    executable = require_chromium()
    import tempfile

    with tempfile.TemporaryDirectory(prefix="ser-chromium-", ignore_cleanup_errors=True) as profile:
        browser = Chromium(executable, Path(profile))
        try:
            for domain in ("Page", "Runtime"):
                browser.call(f"{domain}.enable")
            ui = scheduled.api_url.removesuffix("/api")
            # the UI keeps the server's credentials where its login page would put them
            browser.call("Page.navigate", url=f"{ui}/")
            token = base64.b64encode(auth_string(scheduled.home).encode()).decode()
            browser.call("Runtime.evaluate",
                         expression=f"localStorage.setItem('prefect-password', '{token}')")
            browser.call("Page.navigate", url=f"{ui}/runs")
            wanted = scheduled.run["name"]
            body = ""
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                body = browser.call("Runtime.evaluate", expression="document.body.innerText",
                                    returnByValue=True)["result"].get("value") or ""
                if wanted in body or "Something went wrong" in body:
                    break
                time.sleep(1)
            errors = [e for e in browser.events if e.get("method") == "Runtime.exceptionThrown"]
        finally:
            browser.close()
    assert "Something went wrong" not in body, body[:2000]
    assert wanted in body, body[:2000]
    assert errors == [], errors[:3]
