"""A local Prefect API server that outlives one command, like the embedded PostgreSQL.

Prefect's ephemeral mode starts a temporary API server inside every process that runs a flow,
which costs 7-15 s per command on two cores. Instead, the first command that needs Prefect starts
``prefect server start`` in the background (bound to 127.0.0.1, state under
``$SER_HOME/prefect``) and later commands connect to it in about a second. ``PREFECT_API_URL``
set by the user always wins; ``SER_PREFECT_SERVER=ephemeral`` restores Prefect's own behaviour.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

STARTUP_TIMEOUT_S = 90.0


class PrefectServerError(RuntimeError):
    """The local Prefect server could not be started."""


@dataclass(frozen=True, slots=True)
class ServerInfo:
    pid: int
    port: int

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"


def _state_file(home: Path) -> Path:
    return home / "server.json"


def _healthy(info: ServerInfo, timeout: float = 1.0) -> bool:
    try:
        with urllib.request.urlopen(f"{info.api_url}/health", timeout=timeout) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_state(home: Path) -> ServerInfo | None:
    try:
        data = json.loads(_state_file(home).read_text())
        return ServerInfo(int(data["pid"]), int(data["port"]))
    except (OSError, ValueError, KeyError):
        return None


def running_server(home: Path) -> ServerInfo | None:
    """The recorded server if its process is alive and answers its health check."""
    info = read_state(home)
    if info is not None and _alive(info.pid) and _healthy(info):
        return info
    return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def _lock(home: Path) -> Iterator[None]:
    # Two commands starting at once must not start two servers.
    with (home / "server.lock").open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def start_server(home: Path, *, timeout_s: float = STARTUP_TIMEOUT_S) -> ServerInfo:
    """Return the running local server for ``home``, starting one in the background if needed."""
    home.mkdir(parents=True, exist_ok=True)
    with _lock(home):
        info = running_server(home)
        if info is not None:
            return info
        port = _free_port()
        env = {**os.environ, "PREFECT_HOME": str(home),
               "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
               "PREFECT_SERVER_API_HOST": "127.0.0.1"}
        env.pop("PREFECT_API_URL", None)
        log = (home / "server.log").open("ab")
        process = subprocess.Popen(
            [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
             "--port", str(port)],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
            start_new_session=True)  # not killed with the command that started it
        info = ServerInfo(process.pid, port)
        deadline = time.monotonic() + timeout_s
        while not _healthy(info):
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise PrefectServerError(
                    f"the local Prefect server did not start (log: {home / 'server.log'})")
            time.sleep(0.25)
        _state_file(home).write_text(json.dumps({"pid": info.pid, "port": info.port}))
        return info


def stop_server(home: Path, *, timeout_s: float = 15.0) -> bool:
    """Stop the recorded server; True if one was running."""
    info = read_state(home)
    _state_file(home).unlink(missing_ok=True)
    if info is None or not _alive(info.pid):
        return False
    os.killpg(info.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while _alive(info.pid) and time.monotonic() < deadline:
        try:
            os.waitpid(info.pid, os.WNOHANG)
        except ChildProcessError:
            pass
        time.sleep(0.1)
    if _alive(info.pid):
        os.killpg(info.pid, signal.SIGKILL)
    return True
