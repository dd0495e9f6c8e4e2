"""`ser demo --small` end to end in a fresh process, twice: it works, and the rerun does nothing:
no row added, no clip extracted, no model trained, no call generated or scored.

The demo runs as a subprocess (as a user runs it), against the test database, with a fresh
SER_HOME (so Prefect's home and the reports folder start empty, as on a new machine).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from etl.features.specs import PHONE_COPIES

pytestmark = pytest.mark.slow

TABLES = ("clips", "actors", "clip_features", "model_versions", "model_metrics", "model_aliases",
          "batches", "calls", "call_segments", "call_summaries")


def _run_demo(env: dict[str, str]) -> tuple[dict[str, Any], str]:
    proc = subprocess.run([sys.executable, "-m", "ser.cli", "demo", "--small", "--json"],
                          env=env, capture_output=True, text=True, timeout=600, check=False,
                          cwd=Path(__file__).resolve().parent.parent)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout), proc.stderr


def _calls_generated(stderr: str) -> int:
    """The number the ``calls`` progress line gives for the calls this run wrote."""
    match = re.search(r"\] calls\s+(\d+) new synthetic", stderr)
    assert match, stderr[-3000:]
    return int(match.group(1))


def _counts(url: str) -> dict[str, int]:
    engine = create_engine(url)
    with engine.connect() as conn:
        counts = {t: int(conn.execute(text(f"SELECT count(*) FROM {t}")).scalar_one())
                  for t in TABLES}
    engine.dispose()
    return counts


def test_demo_runs_end_to_end_and_is_idempotent(clean_db: str, tmp_path: Path) -> None:
    home = tmp_path / "ser-home"
    env = {**os.environ, "DATABASE_URL": clean_db, "SER_HOME": str(home),
           "SER_REPORTS_DIR": str(tmp_path / "reports"), "PYTHONUNBUFFERED": "1"}
    for key in [k for k in env if k.startswith("PREFECT_")]:
        env.pop(key)  # the demo configures its own local, quiet Prefect home
    first, stderr = _run_demo(env)

    # Every step ran and left data behind.
    for step in ("corpus", "ingest", "features", "train", "calls", "score", "reports"):
        assert re.search(rf"\] {step}\b", stderr), f"no progress line for {step}"
    counts = _counts(clean_db)
    config = first["config"]
    corpus = config["corpus"]
    n_clips = len(corpus["actors"]) * 6 * corpus["sentences"]
    # each clip as recorded (rich), and phone-line copies (rich+phone) of the clips callcentre4
    # trains on: 4 of CREMA-D's 6 emotions (disgust and fearful are left out)
    n_trained = len(corpus["actors"]) * 4 * corpus["sentences"]
    assert counts["clips"] == n_clips
    assert counts["clip_features"] == n_clips + PHONE_COPIES * n_trained
    assert counts["actors"] == len(corpus["actors"])  # demographics CSV matched every actor
    assert counts["model_versions"] == 1 and counts["model_aliases"] == 1
    assert counts["batches"] == config["nights"]
    per_night = [config["calls_earlier_nights"]] * (config["nights"] - 1) + [
        config["calls_last_night"]]  # oldest night first, as the demo scores them
    n_calls = sum(per_night)
    assert counts["calls"] == n_calls and counts["call_summaries"] >= n_calls - 1
    # a 30 s generated call holds about nine utterance windows over its two talkers (fewer when
    # a soft talker sits on a noisy line)
    assert counts["call_segments"] >= 6 * n_calls
    # the first run did the work the second must not redo: it wrote every call and scored
    # (or failed) each one in this run, leaving none pending
    assert _calls_generated(stderr) == n_calls
    assert [r["run_scored"] + r["run_failed"] for r in first["score"]] == per_night
    assert all(r["n_pending"] == 0 for r in first["score"])
    assert first["ingest"]["added"] == n_clips and first["features"]["stored"] == n_clips
    train = first["train"]
    assert train["trained"] and train["label_scheme"] == "callcentre4"
    assert 0.25 < float(train["cv_uar"]) <= 1.0
    # The demographic breakdown the model report shows comes from the CSV.
    engine = create_engine(clean_db)
    with engine.connect() as conn:
        groups = set(conn.execute(text(
            "SELECT DISTINCT group_name FROM model_metrics WHERE group_name IS NOT NULL")).scalars())
    engine.dispose()
    assert {"sex", "age_band", "race"} <= groups

    # Reports: the index exists and links every report, which all exist.
    index = Path(str(first["index"]))
    assert index.exists() and index.parent == tmp_path / "reports"
    html = index.read_text()
    hrefs = re.findall(r'href="([^"#]+\.html)"', html)
    assert any(h.startswith("model-") for h in hrefs)
    assert sum(h.startswith("batch-") for h in hrefs) == config["nights"]
    assert all((index.parent / h).exists() for h in hrefs)

    # Each report is linked from Prefect (link artifacts) plus one Markdown summary of the run.
    import sqlite3

    with sqlite3.connect(home / "prefect" / "prefect.db") as prefect_db:
        keys = {k for (k,) in prefect_db.execute("SELECT key FROM artifact")}
    assert {"demo-summary", "reports-index", "batch-report-2024-01-17"} <= keys

    # Second run: same data, nothing duplicated, and no work done: every clip is known, none
    # is pending extraction, the model is reused, no call is generated and none is scored.
    second, stderr = _run_demo(env)
    assert _counts(clean_db) == counts
    assert second["ingest"]["added"] == 0 and second["ingest"]["skipped"] == n_clips
    assert second["features"]["pending"] == 0 and second["features"]["stored"] == 0
    assert not second["train"]["trained"]
    assert second["train"]["model_version_id"] == train["model_version_id"]
    assert _calls_generated(stderr) == 0
    assert [(r["batch_id"], r["run_scored"], r["run_failed"], r["n_pending"])
            for r in second["score"]] == [(r["batch_id"], 0, 0, 0) for r in first["score"]]
    assert [(r["n_scored"], r["n_failed"]) for r in second["score"]] == [
        (r["n_scored"], r["n_failed"]) for r in first["score"]]
    assert second["reports"] == first["reports"]


def test_nights_written_by_parallel_processes_equal_those_written_in_process(
        tmp_path: Path) -> None:
    """The demo's nights (etl.runs.demo_calls): a pool of processes writes the same calls as
    this process does, and a rerun with the same parameters writes none."""
    import datetime as dt

    from etl.runs.demo_calls import CallNight, generate_nights

    def nights(root: Path) -> list[CallNight]:
        return [CallNight(root / f"night-{k}", 1, 70 + k, dt.date(2024, 1, 16 + k))
                for k in range(2)]

    def written(root: Path) -> dict[str, bytes]:
        return {str(p.relative_to(root)): p.read_bytes()
                for p in sorted(root.rglob("*")) if p.is_file()}

    kwargs: dict[str, Any] = {"minutes": 0.1, "actors": (31, 32)}
    assert generate_nights(nights(tmp_path / "pool"), workers=2, **kwargs) == 2
    assert generate_nights(nights(tmp_path / "here"), workers=1, **kwargs) == 2
    assert written(tmp_path / "pool") == written(tmp_path / "here")
    assert any(name.endswith(".wav") for name in written(tmp_path / "pool"))
    assert generate_nights(nights(tmp_path / "pool"), workers=2, **kwargs) == 0
