"""The nightly inbox scores a recording again when its content changed after it was scored, as
a new version of the call in the new night's batch, and leaves an unchanged file alone without
reading it (issue 25, item 7)."""

from __future__ import annotations

import datetime as dt
import os
import shutil
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

import etl.runs.registration
from etl.runs.batch import score_batch
from etl.scoring.config import ScoringConfig
from etl.synthetic.calls import generate_calls
from etl.synthetic.clips import ClipBank

CONFIG = ScoringConfig(max_duration_s=45.0)  # generated calls are ~24 s


def _night(engine: Engine, inbox: Path, day: int) -> tuple[int, dict[str, dict[str, object]]]:
    report = score_batch(engine, inbox, batch_date=dt.date(2024, 3, day), workers=1,
                         config=CONFIG, skip_done_elsewhere=True)
    with engine.connect() as conn:
        rows = conn.execute(text(
            "SELECT id, call_key, status, sha256, extra, file_size, file_mtime_ns FROM calls "
            "WHERE batch_id = :b"), {"b": report.batch_id}).mappings().all()
    return report.batch_id, {r["call_key"]: dict(r) for r in rows}


def _row(engine: Engine, call_id: int) -> dict[str, object]:
    with engine.connect() as conn:
        return dict(conn.execute(text("SELECT * FROM calls WHERE id = :i"),
                                 {"i": call_id}).mappings().one())


def test_a_changed_recording_is_scored_again_as_a_new_version(
        engine: Engine, model_id: int, bank: ClipBank, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    inbox = tmp_path / "inbox"
    day = inbox / "2024-03-04"
    generate_calls(day, n_calls=2, minutes=0.15, bank=bank, seed=41)
    (day / "late.wav").write_bytes(b"half a copy")  # fails before it is ever hashed
    _b1, first = _night(engine, inbox, 4)
    assert {k: r["status"] for k, r in first.items()} == {
        "2024-03-04/call_0001": "scored", "2024-03-04/call_0002": "scored",
        "2024-03-04/late": "failed"}
    one, two = first["2024-03-04/call_0001"], first["2024-03-04/call_0002"]
    assert one["file_size"] == (day / "call_0001.wav").stat().st_size

    # call_0001 touched (same bytes), call_0002 replaced by other audio, late.wav completed
    os.utime(day / "call_0001.wav", ns=(2_000_000_000_000_000_000,) * 2)
    generate_calls(tmp_path / "other", n_calls=2, minutes=0.15, bank=bank, seed=42)
    shutil.copyfile(tmp_path / "other" / "call_0001.wav", day / "call_0002.wav")
    shutil.copyfile(tmp_path / "other" / "call_0002.wav", day / "late.wav")
    for name, ns in (("call_0002.wav", 2_000_000_000_000_000_001),
                     ("late.wav", 2_000_000_000_000_000_002)):
        os.utime(day / name, ns=(ns, ns))
    _b2, second = _night(engine, inbox, 5)
    assert set(second) == {"2024-03-04/call_0002", "2024-03-04/late"}
    new_two = second["2024-03-04/call_0002"]
    assert new_two["status"] == "scored" and new_two["sha256"] != two["sha256"]
    assert new_two["extra"]["replaces"] == two["id"] and new_two["extra"]["version"] == 2
    assert second["2024-03-04/late"]["status"] == "scored"
    assert second["2024-03-04/late"]["extra"]["replaces"] == first["2024-03-04/late"]["id"]
    # the earlier versions stay as they were scored; the touched one now carries its new stat,
    # so it is not hashed again
    assert _row(engine, int(two["id"]))["sha256"] == two["sha256"]
    assert _row(engine, int(one["id"]))["file_mtime_ns"] == 2_000_000_000_000_000_000

    def no_hashing(path: Path) -> str:
        raise AssertionError(f"{path} was hashed although its size and mtime did not change")

    monkeypatch.setattr(etl.runs.registration, "sha256_file", no_hashing)
    _b3, third = _night(engine, inbox, 6)
    assert third == {}
