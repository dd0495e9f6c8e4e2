"""The demo's nights of synthetic calls: one folder per night, nights in parallel processes.

Synthesis is CPU-bound, so with ``workers`` > 1 the nights are written by a process pool (a
forkserver, safe from a process with threads such as a Prefect flow run's). Each night is
written once: a marker file in its folder holds the night's parameters, so a rerun with the same
parameters writes nothing and starts no process.
"""

from __future__ import annotations

import datetime as dt
import json
import multiprocessing as mp
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from etl.synthetic.calls import generate_calls
from etl.synthetic.clips import ClipBank

NIGHT_MARKER = ".demo-calls.json"


@dataclass(frozen=True, slots=True)
class CallNight:
    """One night's folder of generated calls: how many, their seed and the night's date."""

    folder: Path
    n_calls: int
    seed: int
    day: dt.date


def generate_nights(nights: Sequence[CallNight], *, minutes: float, actors: tuple[int, ...],
                    workers: int) -> int:
    """Write every night not written yet with these parameters; the number of calls written.

    Parameters
    ----------
    minutes : each call's length (the generator jitters it).
    actors : the synthetic speakers of the calls (keep them out of the training corpus).
    workers : processes writing nights at once (1: in this process).
    """
    jobs = [(str(night.folder), night.n_calls, minutes, actors, night.seed, night.day)
            for night in nights
            if not _night_done(night.folder, _fingerprint(night.n_calls, minutes, actors,
                                                         night.seed))]
    if not jobs:  # a rerun: every night is on disk already
        return 0
    if workers <= 1 or len(jobs) <= 1:
        return sum(_generate_night(*job) for job in jobs)
    with ProcessPoolExecutor(max_workers=min(workers, len(jobs)),
                             mp_context=mp.get_context("forkserver")) as pool:
        return sum(pool.map(_generate_night, *zip(*jobs, strict=True)))


def _night_done(folder: Path, fingerprint: dict[str, Any]) -> bool:
    """Whether ``folder`` holds the night that ``fingerprint`` describes."""
    marker = folder / NIGHT_MARKER
    return marker.exists() and json.loads(marker.read_text()) == fingerprint


def _fingerprint(n_calls: int, minutes: float, actors: tuple[int, ...],
                 seed: int) -> dict[str, Any]:
    return {"n_calls": n_calls, "minutes": minutes, "actors": list(actors), "seed": seed}


def _generate_night(folder: str, n_calls: int, minutes: float, actors: tuple[int, ...],
                    seed: int, start: dt.date) -> int:
    """One night of calls (runs in a worker process); skipped when already written."""
    out = Path(folder)
    fingerprint = _fingerprint(n_calls, minutes, actors, seed)
    if _night_done(out, fingerprint):
        return 0
    bank = ClipBank.synthetic(actors=actors, per_emotion=2)
    generate_calls(out, n_calls=n_calls, minutes=minutes, bank=bank, seed=seed, start_date=start)
    (out / NIGHT_MARKER).write_text(json.dumps(fingerprint))
    return n_calls
