"""The `ser` command's own options: --version, -v/--verbose and --log-level."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ser.cli import app


@pytest.fixture()
def root_level() -> Iterator[None]:
    before = logging.getLogger().level
    yield
    logging.getLogger().setLevel(before)


def test_version() -> None:
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.output.strip() == f"ser-analytics {version('ser-analytics')}"


@pytest.mark.parametrize(("args", "level"), [
    ([], logging.WARNING), (["-v"], logging.INFO), (["-vv"], logging.DEBUG),
    (["-vv", "--log-level", "error"], logging.ERROR)])
def test_verbosity_sets_the_log_level(args: list[str], level: int, tmp_path: Path,
                                      root_level: None) -> None:
    rules = tmp_path / "rules.toml"
    rules.write_text('[[rules]]\nname = "x"\nmetric = "overtalk_share"\nthreshold = 0.3\n')
    result = CliRunner().invoke(app, [*args, "rules", "check", str(rules)])
    assert result.exit_code == 0, result.output
    assert logging.getLogger().level == level


def test_unknown_log_level_is_refused(root_level: None) -> None:
    result = CliRunner().invoke(app, ["--log-level", "loud", "rules", "--help"])
    assert result.exit_code == 2 and "--log-level" in result.output


_CHATTY_FLOW = '''
import logging
logging.basicConfig(level=logging.WARNING)  # as the ser console script does
from ser.runtime import quiet_prefect
quiet_prefect()
from prefect import flow, get_run_logger
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
from prefect.logging.handlers import APILogHandler

@flow(name="chatty", log_prints=True)
def chatty() -> str:
    print("progress: 3 calls scored")
    get_run_logger().warning("one call failed")
    from prefect.runtime import flow_run
    return flow_run.id

run_id = chatty()
APILogHandler().flush()  # send what is queued before reading it back
with get_client(sync_client=True) as client:
    logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id])))
print("API:", " | ".join(log.message for log in logs))
'''


def test_flow_runs_log_progress_to_prefect_and_only_warnings_to_the_console(
        tmp_path: Path) -> None:
    """After `quiet_prefect`, a flow run's INFO lines (its prints, Prefect's state lines) reach
    the Prefect API, and the console shows only its warnings."""
    import os
    import subprocess
    import sys

    keep = "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"
    env = {key: value for key, value in os.environ.items()
           if not key.startswith("PREFECT_") or key == keep}
    env.update(SER_HOME=str(tmp_path / "ser-home"), SER_PREFECT_SERVER="ephemeral")
    done = subprocess.run([sys.executable, "-c", _CHATTY_FLOW], env=env, capture_output=True,
                          text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr
    api = next(line for line in done.stdout.splitlines() if line.startswith("API:"))
    assert "progress: 3 calls scored" in api and "one call failed" in api
    assert "Finished in state Completed" in api
    assert "one call failed" in done.stderr
    assert "progress" not in done.stderr and "Finished in state" not in done.stderr, done.stderr
