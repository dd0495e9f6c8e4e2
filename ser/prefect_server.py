"""A local Prefect API server that outlives one command, like the embedded PostgreSQL.

Prefect's ephemeral mode starts a temporary API server inside every process that runs a flow,
which costs 7-15 s per command on two cores. Instead, the first command that needs Prefect starts
``prefect server start`` in the background (bound to 127.0.0.1, state under
``$SER_HOME/prefect``) and later commands connect to it in about a second. ``PREFECT_API_URL``
set by the user always wins; ``SER_PREFECT_SERVER=ephemeral`` restores Prefect's own behaviour.

127.0.0.1 is reachable by every local user, and the API can create flow runs, so the server
requires Prefect's basic authentication (``PREFECT_SERVER_API_AUTH_STRING``): the credentials are
generated once into ``$SER_HOME/prefect/api-auth`` (mode 0600, readable by the owner only) and
handed to our own clients as ``PREFECT_API_AUTH_STRING``. Only the health check stays open.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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


AUTH_USER = "ser"


def auth_file(home: Path) -> Path:
    return home / "api-auth"


def auth_string(home: Path) -> str:
    """The background server's ``user:password``, generated on first use (mode 0600)."""
    path = auth_file(home)
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    home.mkdir(parents=True, exist_ok=True)
    value = f"{AUTH_USER}:{secrets.token_urlsafe(32)}"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another command wrote it first
        return path.read_text().strip()
    with os.fdopen(fd, "w") as handle:
        handle.write(value + "\n")
    return value


def auth_header(auth: str) -> dict[str, str]:
    """The ``Authorization`` header Prefect's clients send for ``auth`` (``user:password``)."""
    return {"Authorization": "Basic " + base64.b64encode(auth.encode()).decode()}


def _requires_auth(info: ServerInfo, timeout: float = 2.0) -> bool:
    """Whether the server refuses an API call without credentials (one started before it
    required them does not)."""
    try:
        with urllib.request.urlopen(f"{info.api_url}/admin/version", timeout=timeout):
            return False
    except urllib.error.HTTPError as exc:
        return exc.code == 401
    except OSError:
        return False


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
        if info is not None and _requires_auth(info):
            return info
        if info is not None:  # open to every local user: replaced by one that is not
            stop_server(home)
        port = _free_port()
        env = {**os.environ, "PREFECT_HOME": str(home),
               "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
               "PREFECT_SERVER_API_HOST": "127.0.0.1",
               "PREFECT_SERVER_API_AUTH_STRING": auth_string(home),
               # The UI's own API address: Prefect's default (port 4200) is not this server.
               "PREFECT_UI_API_URL": f"http://127.0.0.1:{port}/api"}
        env.pop("PREFECT_API_URL", None)
        env.pop("PREFECT_API_AUTH_STRING", None)
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


# A server-side failure in Prefect's log: an ERROR/CRITICAL record from one of its services (the
# scheduler, the late-runs marker, ...). Telemetry cannot reach a closed network and says so at
# ERROR level; that says nothing about the server's health.
_LOG_RECORD = re.compile(
    r"^(?P<time>\d\d:\d\d:\d\d\.\d+) \| (?P<level>ERROR|CRITICAL)\s*\| (?P<logger>[\w.]+) - "
    r"(?P<message>.*)$")
_IGNORED_LOGGERS = ("prefect.server.services.telemetry",)
_LOG_TAIL_BYTES = 2 * 2**20


@dataclass(frozen=True, slots=True)
class ServerError:
    """The last server-side error in the log: when, where, and the exception line."""

    time: str
    logger: str
    message: str
    exception: str | None


def last_server_error(log: Path) -> ServerError | None:
    """The last ERROR record of a Prefect service in ``log`` (with its traceback's last line).

    Only the log's tail is read: a server left running for months keeps a long log.
    """
    try:
        with log.open("rb") as handle:
            handle.seek(max(log.stat().st_size - _LOG_TAIL_BYTES, 0))
            lines = handle.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return None
    found: ServerError | None = None
    for i, line in enumerate(lines):
        match = _LOG_RECORD.match(line)
        if match is None or match["logger"].startswith(_IGNORED_LOGGERS):
            continue
        exception = None
        for follow in lines[i + 1:]:
            if _LOG_RECORD.match(follow) or re.match(r"^\d\d:\d\d:\d\d\.\d+ \|", follow):
                break
            if follow and not follow.startswith((" ", "\t", "Traceback", "The above",
                                                 "During handling")):
                exception = follow.strip()
        found = ServerError(match["time"], match["logger"], match["message"].strip(), exception)
    return found


@dataclass(frozen=True, slots=True)
class ServerHealth:
    """What ``ser prefect status`` reports about a Prefect API server."""

    api_url: str
    source: str  # "PREFECT_API_URL" or "background server (pid N)"
    healthy: bool
    version: str | None = None
    deployments: int | None = None
    scheduled_runs: int | None = None
    last_error: ServerError | None = None
    problems: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        data = {k: getattr(self, k) for k in self.__dataclass_fields__}
        data["last_error"] = (None if self.last_error is None else
                              {k: getattr(self.last_error, k)
                               for k in self.last_error.__dataclass_fields__})
        return data


def _api(api_url: str, path: str, body: dict[str, Any] | None = None,
         timeout: float = 5.0, auth: str | None = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        f"{api_url.rstrip('/')}/{path}", data=data, method="GET" if body is None else "POST",
        headers={"content-type": "application/json", **(auth_header(auth) if auth else {})})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read() or b"null")


def check_server(api_url: str, *, source: str, log: Path | None = None,
                 auth: str | None = None) -> ServerHealth:
    """Health, version, deployments and scheduled runs of the server at ``api_url``.

    The count of scheduled runs is the scheduler's output: a deployment with an active schedule
    and no scheduled run means the scheduler is failing (its error is then in ``last_error``).
    The filter bodies send ``limit``/``sort`` as null, as Prefect's own CLI does: a server that
    rejects them also breaks ``prefect flow-run ls`` and the UI. ``auth``: the server's
    ``user:password``, if it requires one.
    """
    problems: list[str] = []
    try:
        healthy = bool(_api(api_url, "health"))
    except (OSError, ValueError) as exc:
        return ServerHealth(api_url, source, False, problems=[f"not reachable: {exc}"],
                            last_error=last_server_error(log) if log else None)
    version = deployments = scheduled = None
    try:
        version = str(_api(api_url, "admin/version", auth=auth))
        found = _api(api_url, "deployments/filter", {"limit": None, "sort": None, "offset": 0},
                     auth=auth)
        deployments = len(found)
        scheduled = int(_api(api_url, "flow_runs/count", {
            "flow_runs": {"state": {"type": {"any_": ["SCHEDULED"]}}}}, auth=auth))
        if any(d.get("schedules") and not d.get("paused") for d in found) and scheduled == 0:
            problems.append("deployments have active schedules but no run is scheduled "
                            "(the scheduler is failing; see last error)")
    except urllib.error.HTTPError as exc:
        problems.append(f"the API rejected a query Prefect's CLI makes: HTTP {exc.code} "
                        f"{exc.read()[:300].decode('utf-8', 'replace')}")
    except (OSError, ValueError) as exc:
        problems.append(f"API query failed: {exc}")
    return ServerHealth(api_url, source, healthy, version, deployments, scheduled,
                        last_server_error(log) if log else None, problems)


class EphemeralServerError(PrefectServerError):
    """Only Prefect's temporary in-process server is available; schedules cannot run there."""


def serving_api(home: Path, *, mode: str) -> tuple[str, str]:
    """The persistent API server a schedule runs on: ``(api_url, source)``.

    ``PREFECT_API_URL`` wins; else the background server under ``home`` (started if needed).
    Prefect's ephemeral server lives only as long as one command and has no scheduler, so a
    deployment served on it never fires: with ``mode == "ephemeral"`` this refuses.
    """
    url = os.environ.get("PREFECT_API_URL")
    if url:
        return url, "PREFECT_API_URL"
    if mode != "local":
        raise EphemeralServerError(
            "SER_PREFECT_SERVER=ephemeral gives only a temporary Prefect server, where schedules "
            "never fire; unset it (ser serve then uses the background server) or set "
            "PREFECT_API_URL to a Prefect server of your own")
    info = start_server(home)
    return info.api_url, f"background server (pid {info.pid}, log {home / 'server.log'})"
