"""Real Dask clusters for tests: worker *processes*, a worker that cannot see the audio, and a
worker killed while it holds a task. Shared by tests/test_dask_scoring.py and
tests/test_dask_features.py.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from distributed import Client

# sh -c script: $1 the audio folder, $2 the dask executable, $3 the scheduler
BLIND_WORKER = ('mount -t tmpfs no-audio "$1" && exec "$2" worker "$3" --nthreads 1 '
                "--no-nanny --name blind --no-dashboard")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (closed again at once)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def unshare_works(folder: Path) -> bool:
    """Whether this machine lets an unprivileged process mount a tmpfs in its own namespace."""
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "-rm", "sh", "-c", 'mount -t tmpfs probe "$1"', "sh",
                            str(folder)], capture_output=True, check=False)
    return probe.returncode == 0


@contextmanager
def blind_worker_cluster(audio: Path, workdir: Path, *,
                         start_timeout_s: float = 60.0) -> Iterator[str]:
    """A ``dask scheduler`` and one ``dask worker`` process that cannot see ``audio``; yields
    the scheduler's address once the worker has joined (skips the test without namespaces).

    The worker runs in its own mount namespace (``unshare -rm``, no privileges needed) with an
    empty tmpfs mounted over ``audio``: the same absolute path exists on that worker but holds
    nothing, exactly like a node whose audio share is not mounted (or another share is mounted
    there). The test process still reads the files, so only the worker's view differs.
    """
    if not unshare_works(workdir):
        pytest.skip("needs unprivileged mount namespaces (unshare -rm)")
    dask_exe = str(Path(sys.executable).with_name("dask"))
    scheduler_file = workdir / "scheduler.json"
    procs = [subprocess.Popen(
        [dask_exe, "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
         "--scheduler-file", str(scheduler_file)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    try:
        deadline = time.monotonic() + start_timeout_s
        while not scheduler_file.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        address = json.loads(scheduler_file.read_text())["address"]
        procs.append(subprocess.Popen(
            ["unshare", "-rm", "sh", "-c", BLIND_WORKER, "sh", str(audio), dask_exe, address],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        with Client(address, set_as_default=False) as client:
            client.wait_for_workers(1, timeout=max(1.0, deadline - time.monotonic()))
        yield address
    finally:
        for proc in procs:  # our own test processes; a graceful close only waits
            proc.kill()
            proc.wait(timeout=30)


@contextmanager
def when_a_worker_is_busy(address: str, *, key_prefix: str,
                          act: Callable[[Client, str, list[str]], object]
                          ) -> Iterator[list[object]]:
    """Call ``act(spy client, worker, its matching tasks)`` once, for the first worker the
    scheduler shows processing a task whose key starts with ``key_prefix`` (in a thread, while
    the body runs); yields ``[act's result]`` once it has acted."""
    done: list[object] = []
    stop = threading.Event()

    def watch() -> None:
        with Client(address, set_as_default=False) as spy:
            while not stop.is_set():
                for worker, keys in spy.processing().items():
                    busy = [str(k) for k in keys if str(k).startswith(key_prefix)]
                    if busy:
                        done.append(act(spy, worker, busy))
                        return
                stop.wait(0.01)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    try:
        yield done
    finally:
        stop.set()
        thread.join(timeout=30)


@contextmanager
def kill_a_busy_worker(address: str, *, key_prefix: str) -> Iterator[list[object]]:
    """``kill -9`` the first worker process the scheduler shows processing a task whose key
    starts with ``key_prefix``; yields ``[(worker, its matching tasks)]`` once it has killed."""

    def kill(spy: Client, worker: str, busy: list[str]) -> tuple[str, list[str]]:
        os.kill(spy.run(os.getpid, workers=[worker])[worker], signal.SIGKILL)
        return worker, busy

    with when_a_worker_is_busy(address, key_prefix=key_prefix, act=kill) as killed:
        yield killed
