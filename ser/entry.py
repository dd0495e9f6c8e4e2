"""The `ser` console script. `ser features` starts its workers' forkserver before anything else.

The forkserver imports the extraction stack (numpy, scipy.fft, soundfile, soxr: ~0.5 s on two
cores) before it can fork a worker. Started here, that overlaps the CLI's own imports and the
database start instead of following them, so the first clips are extracted ~0.5 s sooner (and
up to ~1 s sooner end to end when the flow then imports Prefect; see bench/features.py).
"""

from __future__ import annotations

import os
import sys


def _uses_local_workers(args: list[str]) -> bool:
    """``ser features`` arguments that will run local worker processes (a cheap guess: a wrong
    guess only starts an idle forkserver, or starts it later)."""
    if not args or args[0] != "features":
        return False
    flags = {a.split("=", 1)[0] for a in args[1:]}
    if flags & {"--help", "--list", "--dask-address"} or os.environ.get("SER_DASK_ADDRESS"):
        return False
    workers = os.environ.get("SER_WORKERS", "2")
    for i, arg in enumerate(args):
        if arg == "--workers" and i + 1 < len(args):
            workers = args[i + 1]
        elif arg.startswith("--workers="):
            workers = arg.split("=", 1)[1]
    return workers.strip() != "1"


def main() -> None:  # pragma: no cover - the console script; tests call `ser.cli.app`
    if _uses_local_workers(sys.argv[1:]):
        from etl.runs.pool import start_forkserver

        start_forkserver()
    from ser.cli import main as cli_main

    cli_main()
