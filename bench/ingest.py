"""Ingest benchmark: metadata throughput on real RAVDESS and on 10,000 synthetic files. Prints JSON.

Runs the plain ``etl.corpora.ingest`` path the flow wraps (chunked transactions, thread-pool hashing and
header reads), without Prefect's fixed start-up cost, against a scratch embedded PostgreSQL in a
temporary SER_HOME (stopped and deleted afterwards). Each corpus is ingested twice; the second
run must add nothing.

Usage: python bench/ingest.py [--ravdess PATH] [--n-synthetic 10000] [--workers N]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # etl.synthetic.corpora writes the synthetic files

from sqlalchemy import Engine

from bench.scratch import scratch_database

DEFAULT_RAVDESS = ROOT.parent / "shared" / "datasets" / "ravdess"


def _run_twice(engine: Engine, corpus: str, root: Path, workers: int | None) -> dict[str, Any]:
    from db.engine import session_factory
    from etl.corpora.ingest import finish_run, ingest_folder, start_run

    out: dict[str, Any] = {}
    for label in ("first", "rerun"):
        with session_factory(engine)() as session:
            start = time.perf_counter()
            with session.begin():
                run_id = start_run(session, corpus=corpus, path=str(root))
            counts = ingest_folder(session, corpus=corpus, root=root, run_id=run_id,
                                   workers=workers)
            session.commit()  # etl never commits: the caller does
            with session.begin():
                finish_run(session, run_id=run_id, counts=counts)
            seconds = time.perf_counter() - start
        out[label] = {"seconds": round(seconds, 3), "files_per_s": round(counts.files_seen / seconds),
                      **counts.as_dict()}
    return {"files": out["first"]["files_seen"], "added": out["first"]["added"],
            "duplicates": out["first"]["duplicates"], "failed": out["first"]["failed"],
            "seconds": out["first"]["seconds"], "files_per_s": out["first"]["files_per_s"],
            "rerun_added": out["rerun"]["added"], "rerun_seconds": out["rerun"]["seconds"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ravdess", type=Path, default=DEFAULT_RAVDESS)
    parser.add_argument("--n-synthetic", type=int, default=10_000)
    parser.add_argument("--workers", type=int, default=None)
    args = parser.parse_args()

    start = time.perf_counter()
    with scratch_database(None, prefix="ser-bench-ingest-") as (tmp, _env, engine):
        from etl.synthetic.corpora import write_tiny_wavs

        result: dict[str, Any] = {"db_start_seconds": round(time.perf_counter() - start, 2),
                                  "workers": args.workers or min(8, 2 * (os.cpu_count() or 1)),
                                  "cpus": os.cpu_count()}
        if args.ravdess.is_dir():
            result["ravdess"] = _run_twice(engine, "ravdess", args.ravdess.resolve(),
                                           args.workers)
        else:
            result["ravdess"] = {"skipped": f"{args.ravdess} not found"}
        synth = tmp / "synthetic"
        start = time.perf_counter()
        write_tiny_wavs(synth, args.n_synthetic)
        write_seconds = time.perf_counter() - start
        # A different corpus label would be wrong here: the names are RAVDESS names, and
        # clips are unique per (corpus, sha256), so the real RAVDESS rows do not interfere.
        result["synthetic"] = {"write_seconds": round(write_seconds, 2),
                               "clip_seconds": 0.1,
                               **_run_twice(engine, "ravdess", synth, args.workers)}
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
