"""Benchmark: render time and size of reports over a 1,000-call synthetic night.

Creates a throw-away database (on DATABASE_URL's server, else the embedded one under SER_HOME),
inserts a model, 30 nights of history and one night of 1,000 scored calls with the test
factories, renders each kind of report and prints JSON. Usage::

    python bench/reports.py [--calls 1000] [--history 30]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

# Run as a script, this file's folder comes first on sys.path and "reports" would be this
# module; the project root (reports/, etl/) must win.
ROOT = Path(__file__).resolve().parent.parent
sys.path[:] = [str(ROOT)] + [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]

from sqlalchemy import Engine, make_url, text
from sqlalchemy.orm import Session

from db.engine import make_engine, session_scope
from db.migrate import upgrade
from etl.synthetic import history as f
from flows.database import database_url
from reports import build


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--history", type=int, default=30, help="earlier nights (trends)")
    return parser.parse_args()


@contextmanager
def scratch_database() -> Iterator[Engine]:
    """An engine on a new, migrated database on DATABASE_URL's server; dropped afterwards."""
    server = make_engine(database_url(), isolation_level="AUTOCOMMIT")
    name = f"ser_bench_reports_{uuid.uuid4().hex[:8]}"
    with server.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(server.url.render_as_string(hide_password=False)).set(database=name)
    engine = make_engine(url.render_as_string(hide_password=False))
    try:
        upgrade(engine)
        yield engine
    finally:
        engine.dispose()
        with server.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        server.dispose()


def insert_night(engine: Engine, *, day: dt.date, calls: int,
                 history: int) -> tuple[f.BatchIds, int, float]:
    """A model in production, ``history`` earlier nights and one night of ``calls`` scored
    calls on ``day``: (that night's batch, a newer model version id, seconds taken)."""
    t0 = time.perf_counter()
    with session_scope(engine) as s:
        clips = f.make_corpus(s, n_actors=24, seed=1)
        fs = f.make_feature_set(s)
        prod = f.make_model_version(s, clip_ids=clips, feature_set_id=fs, skill=0.6, seed=2)
        f.promote(s, prod)
        new = f.make_model_version(s, clip_ids=clips, feature_set_id=fs, skill=0.7, seed=3)
        f.make_history(s, model_version_id=prod, last_date=day, days=history, n_calls=40)
        batch = f.make_batch(s, model_version_id=prod, batch_date=day, n_calls=calls, seed=4)
    return batch, new, time.perf_counter() - t0


def render_reports(s: Session, *, day: dt.date, model_version_id: int, escalated: list[int],
                   out: Path) -> tuple[dict[str, float], dict[str, int]]:
    """Render each kind of report into ``out``: (seconds, bytes) by report."""
    timings: dict[str, float] = {}
    sizes: dict[str, int] = {}
    t = time.perf_counter()
    call_paths = [build.call_report(s, c, out) for c in escalated[:50]]
    timings["call_report_mean_s"] = (time.perf_counter() - t) / max(len(call_paths), 1)
    sizes["call_report_max_bytes"] = max((p.stat().st_size for p in call_paths), default=0)
    t = time.perf_counter()
    path = build.batch_report(s, day, out)
    timings["batch_report_s"] = time.perf_counter() - t
    sizes["batch_report_bytes"] = path.stat().st_size
    t = time.perf_counter()
    path = build.model_report(s, model_version_id, out)
    timings["model_report_s"] = time.perf_counter() - t
    sizes["model_report_bytes"] = path.stat().st_size
    t = time.perf_counter()
    path = build.index_report(out)
    timings["index_report_s"] = time.perf_counter() - t
    sizes["index_bytes"] = path.stat().st_size
    return timings, sizes


def main() -> None:
    args = parse_args()
    day = dt.date(2026, 3, 14)
    with scratch_database() as engine:
        batch, new, insert_s = insert_night(engine, day=day, calls=args.calls,
                                            history=args.history)
        with session_scope(engine) as s:
            n_segments = s.execute(text(
                "SELECT count(*) FROM call_segments cs JOIN calls c ON c.id = cs.call_id "
                "WHERE c.batch_id = :b"), {"b": batch.batch_id}).scalar_one()
            escalated = s.execute(text(
                "SELECT call_id FROM call_summaries WHERE escalated AND call_id = ANY(:i) "
                "ORDER BY longest_negative_streak_s DESC"), {"i": batch.call_ids}).scalars().all()
            with tempfile.TemporaryDirectory() as tmp:
                timings, sizes = render_reports(s, day=day, model_version_id=new,
                                                escalated=list(escalated), out=Path(tmp))
        print(json.dumps({
            "benchmark": "reports",
            "calls": args.calls,
            "segments": int(n_segments),
            "escalated": len(escalated),
            "history_nights": args.history,
            "factory_insert_s": round(insert_s, 2),
            **{k: round(v, 3) for k, v in timings.items()},
            **sizes,
            "batch_report_mb": round(sizes["batch_report_bytes"] / 2**20, 2),
        }, indent=2))

if __name__ == "__main__":
    main()
