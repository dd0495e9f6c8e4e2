"""Analyst queries against a growing history: does a fixed window stay as fast? Prints JSON.

1. A scratch embedded PostgreSQL in a temporary SER_HOME (stopped and deleted afterwards),
   migrated to head, with the server settings ``ser`` gives it (``db.embedded``); unless
   ``--no-night``, a model trained there on RAVDESS actors 01-16 (bench/nightly.py's ``train``).
2. One database per history size, each a copy of that one (``CREATE DATABASE ... TEMPLATE``),
   so every size is timed on the same server at the same moment.
3. Synthetic scored history loaded into each with COPY, one transaction per night ending
   yesterday: a batch, ``--calls-per-night`` calls (100 agents in 10 queues), their summaries,
   ``--segments-per-call`` segments each (half agent, half customer, six emotions),
   ``--events-per-call`` conversation events (alternating turns with their loudness, one
   interruption, one long silence), and the night's rollup through
   ``etl.scoring.rollup.refresh_rollup`` as the nightly flow does it. Foreign-key triggers are
   off while loading (``session_replication_role = replica``), so ``call_date`` is written by
   the loader with the trigger's rule and the night's ``call_facts`` rows by the function the
   triggers call (``ser_refresh_call_facts``). VACUUM ANALYZE after each size.
4. Every SQL query of README.md and docs/analytics.md, plus named queries for the windows
   analysts use (escalations last 7 days, trends all and last 30 days, agents all and last 30
   days, one queue-day's emotion mix from the segments and from the rollup, one call's segments
   by id), timed warm and interleaved: one untimed round, then ``--repeats`` rounds, each
   running the query once on every size; the best round per size. The machine's speed drifts
   by 10-20 % over minutes, so sizes timed one after the other would measure the drift too.
5. Unless ``--no-night``: a real night written into each size with the triggers on, as the
   nightly flow writes it: ``--night-calls`` one-minute stereo 8 kHz calls generated from the
   held-out RAVDESS actors 17-20, scored by ``etl.runs.batch.score_batch`` (2 workers), then
   that night's batch report (``ser report batch``); twice per size, alternating, the faster
   of the two. The nights are dated after today.

Usage: python bench/analytics_scale.py [--nights 30,120,365] [--calls-per-night 2000]
       [--segments-per-call 40] [--events-per-call 12] [--repeats 3]
       [--no-night | --ravdess PATH --night-calls 20]
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import json
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.scratch import scratch_database

EMOTIONS = ("angry", "calm", "happy", "sad", "neutral", "fearful")
NEGATIVE = {"angry", "sad", "fearful"}
N_AGENTS = 100
N_QUEUES = 10
RULES = ("customer_negative_share", "customer_negative_streak", "customer_worsening", "overtalk")

# Named queries: (name, fixed window?, SQL). Windows end today, as the loaded history does.
NAMED: tuple[tuple[str, bool, str], ...] = (
    ("escalations_last_7_days", True, """
        SELECT queue, escalation_rule, count(*) AS calls FROM analytics.escalations
        WHERE call_date >= current_date - 7 GROUP BY queue, escalation_rule
        ORDER BY calls DESC"""),
    ("daily_angry_share_all_history", False, """
        SELECT day, queue, round((sum(speech_s) FILTER (WHERE emotion = 'angry')
               / NULLIF(sum(speech_s), 0))::numeric, 3) FROM analytics.daily_trends
        WHERE role = 'customer' GROUP BY day, queue ORDER BY day, queue"""),
    ("daily_angry_share_last_30_days", True, """
        SELECT day, queue, round((sum(speech_s) FILTER (WHERE emotion = 'angry')
               / NULLIF(sum(speech_s), 0))::numeric, 3) FROM analytics.daily_trends
        WHERE role = 'customer' AND day >= current_date - 30 GROUP BY day, queue
        ORDER BY day, queue"""),
    ("agents_most_negative_all_history", False, """
        SELECT agent_id, count(*) AS calls,
               round(avg(negative_share_customer)::numeric, 3) AS negative
        FROM analytics.calls WHERE status = 'scored' AND negative_share_customer IS NOT NULL
        GROUP BY agent_id ORDER BY negative DESC"""),
    ("agents_most_negative_last_30_days", True, """
        SELECT agent_id, count(*) AS calls,
               round(avg(negative_share_customer)::numeric, 3) AS avg_customer_negative,
               round(avg(escalated::int)::numeric, 3) AS escalation_rate
        FROM analytics.calls WHERE status = 'scored' AND negative_share_customer IS NOT NULL
          AND call_date >= current_date - 30
        GROUP BY agent_id HAVING count(*) >= 1 ORDER BY avg_customer_negative DESC"""),
    ("queue_day_emotion_mix_segments", True, """
        SELECT emotion, count(*) AS segments, sum(duration_s) AS speech_s
        FROM analytics.segments
        WHERE queue = 'queue-03' AND call_date = current_date - 3 AND role = 'customer'
        GROUP BY emotion ORDER BY emotion"""),
    ("queue_day_emotion_mix_rollup", True, """
        SELECT emotion, sum(segments) AS segments, sum(speech_s) AS speech_s
        FROM analytics.daily_trends
        WHERE queue = 'queue-03' AND day = current_date - 3 AND role = 'customer'
        GROUP BY emotion ORDER BY emotion"""),
    ("one_call_segments_by_id", True, """
        SELECT role, start_s, end_s, emotion, confidence FROM analytics.segments
        WHERE call_id = (SELECT max(id) FROM public.calls) ORDER BY start_s, role"""),
)


def documented_queries() -> list[tuple[str, str]]:
    """Every SQL statement in README.md and docs/analytics.md, named by file and position."""
    found: list[tuple[str, str]] = []
    for name in ("README.md", "docs/analytics.md"):
        blocks = re.findall(r"```sql\n(.*?)```", (ROOT / name).read_text(), flags=re.DOTALL)
        statements = [s.strip() for block in blocks for s in re.split(r";\s*(?:\n|$)", block)]
        found.extend((f"{name}#{i}", s) for i, s in enumerate(x for x in statements if x))
    return found


class Loader:
    """Writes synthetic nights with COPY on one raw psycopg2 connection."""

    def __init__(self, conn: Any, *, model_version_id: int, calls_per_night: int,
                 segments_per_call: int, events_per_call: int, seed: int = 0) -> None:
        self.conn = conn
        self.mv = model_version_id
        self.calls_per_night = calls_per_night
        self.segments_per_call = segments_per_call
        self.events_per_call = events_per_call
        self.rng = np.random.default_rng(seed)
        self.next_call_id = 1
        # one probability vector per top emotion (the queries never read them)
        self.probabilities: list[str] = []
        for top in range(len(EMOTIONS)):
            p = self.rng.dirichlet(np.ones(len(EMOTIONS)))
            p[top] += 1.0
            p /= p.sum()
            self.probabilities.append(json.dumps(
                {x: round(float(v), 3) for x, v in zip(EMOTIONS, p, strict=True)}))

    def _copy(self, table: str, columns: str, text: str) -> None:
        with self.conn.cursor() as cur:
            cur.copy_expert(f"COPY {table} ({columns}) FROM STDIN WITH (FORMAT csv)",
                            io.StringIO(text))

    def night(self, day: dt.date) -> int:
        """Load one night's batch; return its id (the caller commits).

        The steps draw from one generator in a fixed order (calls, summaries, segments), so a
        seed gives the same history.
        """
        with self.conn.cursor() as cur:
            cur.execute("INSERT INTO batches (batch_date, source_path, model_version_id, status, "
                        "n_calls, n_scored) VALUES (%s, %s, %s, 'done', %s, %s) RETURNING id",
                        (day, f"/srv/inbox/{day}", self.mv, self.calls_per_night,
                         self.calls_per_night))
            batch_id = int(cur.fetchone()[0])
        ids = np.arange(self.next_call_id, self.next_call_id + self.calls_per_night)
        self.next_call_id += self.calls_per_night
        durations = self._calls(day, batch_id, ids)
        negative = self._summaries(ids, durations)
        self._segments(ids, negative)
        self._events(ids)
        with self.conn.cursor() as cur:  # what the triggers do on a normal write
            cur.execute("SELECT ser_refresh_call_facts(ARRAY(SELECT id FROM calls "
                        "WHERE batch_id = %s))", (batch_id,))
        return batch_id

    def _calls(self, day: dt.date, batch_id: int, ids: np.ndarray) -> np.ndarray:
        """COPY the night's calls (agents, start times, durations drawn); their durations."""
        rng, n = self.rng, len(ids)
        agents = rng.integers(0, N_AGENTS, n)
        seconds = np.sort(rng.integers(8 * 3600, 20 * 3600, n))
        durations = rng.uniform(60.0, 480.0, n)
        midnight = dt.datetime.combine(day, dt.time(0), tzinfo=dt.UTC)
        calls = "".join(
            f"{cid},{batch_id},c{cid:09d}.wav,/srv/inbox/{day}/c{cid:09d}.wav,"
            f"agent-{a:03d},queue-{a % N_QUEUES:02d},"
            f"{(midnight + dt.timedelta(seconds=int(s))).isoformat()},{day},"
            f"\"{{\"\"0\"\": \"\"agent\"\", \"\"1\"\": \"\"customer\"\"}}\",8000,2,{d:.2f},scored\n"
            for cid, a, s, d in zip(ids, agents, seconds, durations, strict=True))
        self._copy("calls", "id, batch_id, call_key, path, agent_id, queue, started_at, "
                   "call_date, channel_roles, sample_rate, channels, duration_s, status", calls)
        return durations

    def _summaries(self, ids: np.ndarray, durations: np.ndarray) -> np.ndarray:
        """COPY the calls' summaries (escalated when the drawn customer negative share is over
        0.55); that share per call."""
        rng, n = self.rng, len(ids)
        negative = rng.beta(2, 5, n)
        escalated = negative > 0.55
        summaries = "".join(
            f"{cid},{self.mv},{d:.2f},{d * 0.35:.2f},{d * 0.4:.2f},0.25,{o:.3f},0.1,{ng:.3f},"
            f"{ng * 40:.1f},{ng * 0.9:.3f},{ng * 1.1:.3f},{ng * 0.2:.3f},{'t' if e else 'f'},"
            f"{RULES[cid % 4] if e else ''},{'fired' if e else ''},0.95,0.8,0.05,"
            f"{ng * 0.9:.3f},{ng:.3f},{ng:.3f},{ng * 1.1:.3f},{t},{t},{i},{j},"
            f"{rng_rate:.2f},{lc:.1f}\n"
            for cid, d, ng, e, o, t, i, j, rng_rate, lc in zip(
                ids, durations, negative, escalated, rng.uniform(0, 0.3, n),
                rng.integers(5, 60, n), rng.integers(0, 8, n), rng.integers(0, 8, n),
                rng.uniform(2.5, 6.0, n), rng.normal(0, 3, n), strict=True))
        self._copy("call_summaries", "call_id, model_version_id, duration_s, talk_agent_s, "
                   "talk_customer_s, silence_share, overtalk_share, negative_share_agent, "
                   "negative_share_customer, longest_negative_streak_s, "
                   "customer_negative_first_third, customer_negative_last_third, customer_trend, "
                   "escalated, escalation_rule, escalation_reason, customer_scored_share, "
                   "customer_confidence_mean, customer_abstained_share, "
                   "negative_share_customer_q1, negative_share_customer_q2, "
                   "negative_share_customer_q3, negative_share_customer_q4, turns_agent, "
                   "turns_customer, interruptions_by_agent, interruptions_by_customer, "
                   "speaking_rate_agent, loudness_change_customer_db", summaries)
        return negative

    def _segments(self, ids: np.ndarray, negative: np.ndarray) -> None:
        """COPY ``segments_per_call`` segments per call, alternating roles in 3 s windows;
        customers of negative calls lean to the negative emotions."""
        rng, n, k = self.rng, len(ids), self.segments_per_call
        seg_call = np.repeat(ids, k)
        seg_no = np.tile(np.arange(k), n)
        start = seg_no * 3.0
        customer = seg_no % 2 == 1
        lean = np.repeat(negative, k)
        picks = rng.integers(0, len(EMOTIONS), n * k)
        angry = customer & (rng.random(n * k) < lean)
        picks[angry] = 0
        confidence = rng.uniform(0.3, 0.95, n * k)
        out = io.StringIO()
        probabilities = [p.replace('"', '""') for p in self.probabilities]
        for cid, c, s, p, conf in zip(seg_call, customer, start, picks, confidence, strict=True):
            emotion = EMOTIONS[p]
            out.write(f"{cid},{self.mv},{'customer' if c else 'agent'},{s:.1f},{s + 2.8:.1f},"
                      f"{emotion},{conf:.3f},{'t' if emotion in NEGATIVE and conf >= 0.35 else 'f'},"
                      f"\"{probabilities[p]}\",{'t' if conf < 0.35 else 'f'}\n")
        self._copy("call_segments", "call_id, model_version_id, role, start_s, end_s, emotion, "
                   "confidence, is_negative, probabilities, abstained", out.getvalue())


    def _events(self, ids: np.ndarray) -> None:
        """COPY ``events_per_call`` events per call: alternating turns (6 s apart, their
        loudness in dBFS), then one interruption and one long silence."""
        rng, n, turns = self.rng, len(ids), max(self.events_per_call - 2, 0)
        out = io.StringIO()
        for cid, level, cut, quiet in zip(ids, rng.normal(-26.0, 4.0, n),
                                          rng.uniform(5.0, 200.0, n), rng.uniform(4.0, 30.0, n),
                                          strict=True):
            for i in range(turns):
                role = "customer" if i % 2 else "agent"
                out.write(f"{cid},{self.mv},{role},turn,{i * 6.0:.1f},{i * 6.0 + 5.5:.1f},"
                          f"{level + (i % 3):.1f}\n")
            out.write(f"{cid},{self.mv},customer,interruption,{cut:.1f},{cut + 0.8:.1f},0.8\n")
            out.write(f"{cid},{self.mv},,silence,{cut + 10:.1f},{cut + 10 + quiet:.1f},"
                      f"{quiet:.1f}\n")
        self._copy("call_events", "call_id, model_version_id, role, kind, start_s, end_s, value",
                   out.getvalue())


def _seed_model(conn: Any) -> int:
    with conn.cursor() as cur:
        cur.execute("INSERT INTO feature_sets (name, version, feature_names, params, params_hash) "
                    "VALUES ('rich', 1, ARRAY['f0'], '{}', repeat('0', 64)) RETURNING id")
        fs = cur.fetchone()[0]
        cur.execute("INSERT INTO registered_models (name) VALUES ('bench') RETURNING id")
        rm = cur.fetchone()[0]
        cur.execute(
            "INSERT INTO model_versions (registered_model_id, version, algorithm, feature_set_id, "
            "label_scheme, classes, training_clip_ids, training_set_sha256, code_version, "
            "artifact_format, artifact, artifact_sha256) VALUES (%s, 1, 'logreg', %s, "
            "(SELECT min(name) FROM label_schemes), %s, '{}', repeat('0', 64), 'bench', 'skops', "
            "'\\x00', repeat('0', 64)) RETURNING id", (rm, fs, list(EMOTIONS)))
        return int(cur.fetchone()[0])


def _time_interleaved(readers: dict[int, Any], sql: str, *,
                      repeats: int) -> dict[int, tuple[float, int]]:
    """Best of ``repeats`` warm runs per history size in milliseconds, and the row count; each
    round runs the query once on every size, so the machine's drift hits all sizes alike."""
    best = dict.fromkeys(readers, float("inf"))
    rows = dict.fromkeys(readers, 0)
    for i in range(repeats + 1):
        for size, conn in readers.items():
            with conn.cursor() as cur:
                t0 = time.perf_counter()
                cur.execute(sql)
                rows[size] = len(cur.fetchall())
                if i:  # the first round only warms the caches
                    best[size] = min(best[size], (time.perf_counter() - t0) * 1000)
    return {size: (round(best[size], 2), rows[size]) for size in readers}


def _sizes(conn: Any) -> dict[str, str]:
    with conn.cursor() as cur:
        cur.execute("SELECT c.relname, pg_size_pretty(pg_total_relation_size(c.oid)) FROM "
                    "pg_class c WHERE c.relnamespace = 'public'::regnamespace AND c.relname IN "
                    "('calls', 'call_facts', 'call_segments', 'call_summaries', 'call_events', "
                    "'daily_emotion_rollup') ORDER BY 1")
        return dict(cur.fetchall())


class RealNight:
    """A trained model and a folder of generated calls, scored as one more night per size."""

    def __init__(self, engine: Any, ravdess: Path, tmp: Path, *, calls: int) -> None:
        from bench.nightly import generate, train

        self.training = train(engine, ravdess, tmp, workers=2)
        self.folder = tmp / "night"
        self.calls = generate(ravdess, self.folder, hours=calls / 60, call_minutes=1.0)
        self.calls.pop("timelines")
        self.reports = tmp / "reports"
        self.nights = 0

    def write(self, engine: Any) -> dict[str, Any]:
        """Score the folder into ``engine``'s database as a night after today (a new date each
        time), then build that night's batch report."""
        from db.engine import session_scope
        from etl.runs.batch import score_batch
        from reports.build import batch_report

        self.nights += 1
        day = dt.date.today() + dt.timedelta(days=self.nights)
        t0 = time.perf_counter()
        report = score_batch(engine, self.folder, batch_date=day, workers=2)
        t1 = time.perf_counter()
        with session_scope(engine) as session:
            batch_report(session, day, self.reports)
        t2 = time.perf_counter()
        return {"calls": report.run_scored, "failed": report.run_failed,
                "score_and_write_s": round(t1 - t0, 2), "batch_report_s": round(t2 - t1, 2)}


def load_history(engine: Any, *, nights: int, calls_per_night: int, segments_per_call: int,
                 events_per_call: int) -> dict[str, Any]:
    """``nights`` nights ending yesterday into ``engine``'s database, then VACUUM ANALYZE."""
    from sqlalchemy import text
    from sqlalchemy.orm import Session

    from etl.scoring.rollup import refresh_rollup

    t0, refresh_s = time.perf_counter(), 0.0
    with engine.connect() as sa_conn:
        conn = sa_conn.connection.driver_connection  # COPY goes through psycopg2 itself
        session = Session(bind=sa_conn)
        mv = sa_conn.execute(text("SELECT v.id FROM model_versions v JOIN registered_models m "
                                  "ON m.id = v.registered_model_id WHERE m.name = 'bench'")
                             ).scalar_one()
        loader = Loader(conn, model_version_id=mv, calls_per_night=calls_per_night,
                        segments_per_call=segments_per_call, events_per_call=events_per_call)
        today = dt.date.today()
        for age in range(1, nights + 1):
            sa_conn.execute(text("SET LOCAL session_replication_role = replica"))
            batch_id = loader.night(today - dt.timedelta(days=age))
            t1 = time.perf_counter()
            refresh_rollup(session, batch_id=batch_id)
            refresh_s += time.perf_counter() - t1
            sa_conn.commit()
        sa_conn.exec_driver_sql("SELECT setval('calls_id_seq', (SELECT max(id) FROM calls))")
        sa_conn.commit()
        session.close()
    load_s = time.perf_counter() - t0
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql("VACUUM ANALYZE")
        return {"nights": nights, "calls": nights * calls_per_night,
                "segments": nights * calls_per_night * segments_per_call,
                "load_s": round(load_s, 1),
                "rollup_refresh_ms_per_night": round(refresh_s * 1000 / nights, 1),
                "sizes": _sizes(conn.connection.driver_connection)}


def _history_engines(engine: Any, nights: list[int]) -> dict[int, Any]:
    """One database per history size, each a copy of ``engine``'s (model, trained bench
    model), so the sizes can be timed side by side on the same server."""
    from db.engine import make_engine

    url = engine.url
    engine.dispose()  # CREATE DATABASE ... TEMPLATE needs the template without sessions
    admin = make_engine(url.set(database="postgres").render_as_string(hide_password=False),
                        isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        for n in nights:
            conn.exec_driver_sql(f'CREATE DATABASE "history_{n}" TEMPLATE "{url.database}"')
    admin.dispose()
    return {n: make_engine(url.set(database=f"history_{n}").render_as_string(
        hide_password=False)) for n in nights}


def run(engine: Any, *, nights: list[int], calls_per_night: int, segments_per_call: int,
        events_per_call: int, repeats: int,
        real_night: RealNight | None = None) -> dict[str, Any]:
    with engine.connect() as sa_conn:
        raw = sa_conn.connection.driver_connection
        _seed_model(raw)
        raw.commit()
        settings = {name: sa_conn.exec_driver_sql(f"SHOW {name}").scalar_one()
                    for name in ("work_mem", "random_page_cost", "effective_cache_size", "jit")}
    engines = _history_engines(engine, nights)
    results = {n: load_history(engines[n], nights=n, calls_per_night=calls_per_night,
                               segments_per_call=segments_per_call,
                               events_per_call=events_per_call) for n in nights}
    for n in nights:  # loading is long: its figures as soon as they exist
        print(json.dumps(results[n]), file=sys.stderr, flush=True)
    queries = [(name, window, sql) for name, window, sql in NAMED]
    # a documented query reads a window when it names one relative to today
    queries += [(name, "current_date" in sql, sql) for name, sql in documented_queries()]
    readers = {n: e.connect().execution_options(isolation_level="AUTOCOMMIT") for n, e
               in engines.items()}
    try:
        drivers = {n: r.connection.driver_connection for n, r in readers.items()}
        for n in nights:
            results[n]["queries"] = {}
        for name, window, sql in queries:
            for n, (ms, rows) in _time_interleaved(drivers, sql, repeats=repeats).items():
                results[n]["queries"][name] = {"ms": ms, "rows": rows, "fixed_window": window}
    finally:
        for r in readers.values():
            r.close()
    if real_night:  # twice per size, alternating; the faster of the two
        writes = [(n, real_night.write(engines[n])) for _ in range(2) for n in nights]
        for n in nights:
            results[n]["real_night"] = min((w for size, w in writes if size == n),
                                           key=lambda w: w["score_and_write_s"])
    for e in engines.values():
        e.dispose()
    first, last = results[nights[0]], results[nights[-1]]
    ratio = {name: round(t["ms"] / max(first["queries"][name]["ms"], 0.01), 2)
             for name, t in last["queries"].items() if t["fixed_window"]}
    if real_night:
        ratio["real_night_score_and_write"] = round(
            last["real_night"]["score_and_write_s"] / first["real_night"]["score_and_write_s"], 2)
    return {"real_night_setup": real_night and {"training": real_night.training,
                                                "calls": real_night.calls},
            "settings": settings, "calls_per_night": calls_per_night,
            "segments_per_call": segments_per_call, "events_per_call": events_per_call,
            "repeats": repeats, "runs": [results[n] for n in nights],
            f"fixed_window_ratio_{nights[-1]}_vs_{nights[0]}": ratio,
            "queries_over_100ms_at_largest": sorted(
                name for name, t in last["queries"].items() if t["ms"] >= 100)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nights", default="30,120,365",
                        help="history sizes to measure, comma-separated (default 30,120,365)")
    parser.add_argument("--calls-per-night", type=int, default=2000)
    parser.add_argument("--segments-per-call", type=int, default=40)
    parser.add_argument("--events-per-call", type=int, default=12)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-night", action="store_true",
                        help="skip the real night scored at each size (needs RAVDESS)")
    parser.add_argument("--ravdess", type=Path,
                        default=ROOT.parent / "shared" / "datasets" / "ravdess")
    parser.add_argument("--night-calls", type=int, default=20)
    args = parser.parse_args()
    if not args.no_night and not args.ravdess.is_dir():
        sys.exit(f"RAVDESS folder not found: {args.ravdess} (or pass --no-night)")
    nights = sorted({int(x) for x in args.nights.split(",") if x.strip()})
    if not nights or nights[0] < 8:
        sys.exit("--nights: sizes of at least 8 nights (the windows reach 7 days back)")

    with scratch_database(None, prefix="ser-bench-analytics-") as (tmp, _env, engine):
        real_night = None if args.no_night else RealNight(
            engine, args.ravdess, tmp, calls=args.night_calls)
        result = run(engine, nights=nights, calls_per_night=args.calls_per_night,
                     segments_per_call=args.segments_per_call,
                     events_per_call=args.events_per_call, repeats=args.repeats,
                     real_night=real_night)
    print(json.dumps({"cpus": os.cpu_count(), **result}, indent=2))


if __name__ == "__main__":
    main()
