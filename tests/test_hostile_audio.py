"""Issue 25: recordings that are not what their header says, and a full disk mid-run.

A truncated WAV and a sample rate outside 8-48 kHz fail as that one call with a one-line
reason (``etl.audio.decode.read_info`` judges the header; a compressed file cut short is caught
while the scorer decodes it); the rest of the batch is scored. A
database that runs out of disk while ``ser score`` writes results ends the run in one line with
exit code 2 (a fault that is not the recording's), and a rerun, with space again, resumes.
"""

from __future__ import annotations

import datetime as dt
import errno
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
from click.testing import Result
from sqlalchemy import Engine, text
from typer.testing import CliRunner

from etl.audio.decode import AudioError, read_info
from etl.synthetic.calls import generate_calls
from etl.synthetic.clips import ClipBank
from tests.utils.score_cli import folder_batch, score_folder


def _calls(engine: Engine, folder: Path, day: str) -> tuple[str, dict[str, tuple[str, str]]]:
    """The batch's status and ``{call_key: (status, error)}``."""
    with engine.connect() as conn:
        batch_id, status = folder_batch(conn, folder, day)
        rows = conn.execute(text("SELECT call_key, status, coalesce(error, '') FROM calls "
                                 "WHERE batch_id = :b"), {"b": batch_id}).all()
    return status, {key: (state, error) for key, state, error in rows}


def _one_line_error(result: Result) -> str:
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert "Traceback" not in result.output
    return lines[0]


# --------------------------------------------------------------------------------------------
# The header: truncated WAVs and rates outside 8-48 kHz
# --------------------------------------------------------------------------------------------


def _wav(path: Path, seconds: float, sr: int, *, channels: int = 2) -> Path:
    rng = np.random.default_rng(sr)
    sf.write(str(path), 0.1 * rng.standard_normal((int(seconds * sr), channels)), sr,
             subtype="PCM_16")
    return path


def test_read_info_refuses_a_truncated_wav_and_rates_outside_8_to_48_khz(tmp_path: Path) -> None:
    whole = _wav(tmp_path / "whole.wav", 10.0, 8000)
    data = whole.read_bytes()
    (tmp_path / "half.wav").write_bytes(data[: len(data) // 2])
    with pytest.raises(AudioError, match=r"truncated recording: its header declares 10\.00 s "
                                         r"of audio but the file holds 5\.00 s"):
        read_info(tmp_path / "half.wav")
    # less than one frame missing is a short last frame, not a cut copy
    (tmp_path / "byte.wav").write_bytes(data[:-1])
    assert read_info(tmp_path / "byte.wav").frames == 80000 - 1
    # a streamed WAV whose writer could not go back to fill in the length declares none
    streamed = bytearray(data)
    streamed[40:44] = struct.pack("<I", 0xFFFFFFFF)
    (tmp_path / "streamed.wav").write_bytes(bytes(streamed))
    assert read_info(tmp_path / "streamed.wav").frames == 80000
    for sr in (8000, 44100, 48000):
        assert read_info(_wav(tmp_path / f"{sr}.wav", 0.5, sr)).sample_rate == sr
    for sr in (4000, 96000):
        with pytest.raises(AudioError, match=rf"sample rate {sr} Hz is outside 8-48 kHz"):
            read_info(_wav(tmp_path / f"{sr}.wav", 0.5, sr))


def test_a_truncated_wav_and_unsupported_rates_fail_alone_in_a_batch(
        model_id: int, engine: Engine, bank: ClipBank, db_cli: CliRunner,
        tmp_path: Path) -> None:
    generate_calls(tmp_path, n_calls=4, minutes=0.3, bank=bank, seed=261)
    (tmp_path / "calls.csv").unlink()
    cut = tmp_path / "call_0002.wav"
    data = cut.read_bytes()
    cut.write_bytes(data[: len(data) // 2])  # as a copy stalled half-way leaves it
    for name, sr in (("call_0003.wav", 4000), ("call_0004.wav", 96000)):
        signal, _native = sf.read(str(tmp_path / name), dtype="float32")
        sf.write(str(tmp_path / name), signal, sr, subtype="PCM_16")  # same samples, new rate
    for day in ("2024-07-01", "2024-07-01"):  # a rerun fails them the same way
        result = score_folder(db_cli, tmp_path, day)
        assert result.exit_code == 1, result.output
        assert "Traceback" not in result.output
        status, calls = _calls(engine, tmp_path, day)
        assert status == "done"
        assert calls["call_0001"] == ("scored", "")
        assert calls["call_0002"][0] == "failed"
        assert calls["call_0002"][1].startswith("truncated recording: its header declares ")
        assert calls["call_0003"] == ("failed", (
            "sample rate 4000 Hz is outside 8-48 kHz; resample the recording into that range "
            "(e.g. to 8 or 16 kHz)"))
        assert calls["call_0004"][1].startswith("sample rate 96000 Hz is outside 8-48 kHz")
        for key in ("call_0002", "call_0003", "call_0004"):
            assert "\n" not in calls[key][1]
            assert f"failed {key}: {calls[key][1]}" in result.output


def test_a_truncated_flac_fails_alone_with_what_its_header_declares(
        model_id: int, engine: Engine, bank: ClipBank, db_cli: CliRunner,
        tmp_path: Path) -> None:
    """A compressed file's header cannot be checked against its size: the shortfall shows while
    it is decoded (libsndfile loses sync where the copy stops), and fails that call."""
    generate_calls(tmp_path, n_calls=3, minutes=0.3, bank=bank, seed=263)
    (tmp_path / "calls.csv").unlink()
    for name in ("call_0002", "call_0003"):
        signal, sr = sf.read(str(tmp_path / f"{name}.wav"), dtype="float32")
        sf.write(str(tmp_path / f"{name}.flac"), signal, sr)
        (tmp_path / f"{name}.wav").unlink()
    cut = tmp_path / "call_0002.flac"
    data = cut.read_bytes()
    cut.write_bytes(data[: len(data) // 2])  # as a copy stalled half-way leaves it
    declared = sf.info(str(cut)).duration
    result = score_folder(db_cli, tmp_path, "2024-07-03")
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    status, calls = _calls(engine, tmp_path, "2024-07-03")
    assert status == "done"
    assert calls["call_0001"] == ("scored", "") and calls["call_0003"] == ("scored", "")
    state, reason = calls["call_0002"]
    assert state == "failed" and "\n" not in reason
    assert reason.startswith(f"truncated recording: its header declares {declared:.2f} s of "
                             "audio but only "), reason
    assert reason.endswith("; deliver the complete file (write it, then rename it into place)")
    assert "Libsndfile" not in reason and "unexpected" not in reason
    decoded = float(reason.split("but only ")[1].split(" s decode")[0])
    assert 0 < decoded < declared


# --------------------------------------------------------------------------------------------
# A full disk while results are written
# --------------------------------------------------------------------------------------------


@pytest.fixture()
def disk_full_on_scored(engine: Engine) -> Iterator[None]:
    """PostgreSQL answers the first result written with a full disk (SQLSTATE 53100), as it does
    when it cannot extend a table's file."""
    with engine.begin() as conn:
        conn.execute(text(
            "CREATE FUNCTION test_disk_full() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            "RAISE EXCEPTION 'could not extend file \"base/1/2\": No space left on device' "
            "USING ERRCODE = 'disk_full'; END $$"))
        conn.execute(text(
            "CREATE TRIGGER test_disk_full BEFORE UPDATE ON calls FOR EACH ROW "
            "WHEN (NEW.status = 'scored') EXECUTE FUNCTION test_disk_full()"))
    try:
        yield
    finally:
        with engine.begin() as conn:
            conn.execute(text("DROP TRIGGER IF EXISTS test_disk_full ON calls"))
            conn.execute(text("DROP FUNCTION IF EXISTS test_disk_full()"))


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_full_database_disk_ends_the_run_in_one_line_and_a_rerun_resumes(
        model_id: int, engine: Engine, bank: ClipBank, db_cli: CliRunner, tmp_path: Path,
        disk_full_on_scored: None, workers: str) -> None:
    generate_calls(tmp_path, n_calls=2, minutes=0.15, bank=bank, seed=262)
    day = f"2024-07-0{1 + int(workers)}"
    result = score_folder(db_cli, tmp_path, day, "--workers", workers)
    assert result.exit_code == 2, result.output
    line = _one_line_error(result)
    assert "disk" in line and "No space left on device" in line, line
    assert "free" in line and "rerun" in line, line

    with engine.begin() as conn:  # space again
        conn.execute(text("DROP TRIGGER test_disk_full ON calls"))
    again = score_folder(db_cli, tmp_path, day)
    assert again.exit_code == 0, again.output
    status, calls = _calls(engine, tmp_path, day)
    assert status == "done" and {s for s, _e in calls.values()} == {"scored"}, calls


def test_no_space_left_on_this_host_ends_the_run_in_one_line(
        model_id: int, db_cli: CliRunner, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """An OSError ENOSPC where ``ser score`` writes (not a recording's fault): exit code 2."""
    import etl.runs.batch

    def no_space(*_args: object, **_kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "spool"))

    monkeypatch.setattr(etl.runs.batch, "score_batch", no_space)
    result = score_folder(db_cli, tmp_path, "2024-07-05")
    assert result.exit_code == 2, result.output
    line = _one_line_error(result)
    assert "No space left on device" in line and "free" in line and "rerun" in line, line


@pytest.fixture()
def no_space_scoring_call_0002(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Scoring ``call_0002`` meets a full disk on this host (as a decoder's temporary file
    would); the other calls score as usual."""
    import etl.runs.batch

    score = etl.runs.batch.score_recording

    def scoring(path: Path, **kwargs: Any) -> object:
        if Path(path).stem == "call_0002":
            raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "tmp"))
        return score(path, **kwargs)

    monkeypatch.setattr(etl.runs.batch, "score_recording", scoring)


def test_no_space_left_while_scoring_a_call_ends_the_run_not_the_call(
        model_id: int, engine: Engine, bank: ClipBank, db_cli: CliRunner, tmp_path: Path,
        no_space_scoring_call_0002: None, monkeypatch: pytest.MonkeyPatch) -> None:
    generate_calls(tmp_path / "b", n_calls=3, minutes=0.15, bank=bank, seed=264)
    folder, day = tmp_path / "b", "2024-07-06"
    result = score_folder(db_cli, folder, day)
    assert result.exit_code == 2, result.output
    line = _one_line_error(result)
    assert line.startswith("error: the disk of this host is full (No space left on device"), line
    assert "rerun" in line
    status, calls = _calls(engine, folder, day)
    assert calls["call_0002"][0] in {"pending", "claimed"}, calls  # not blamed
    assert not any(state == "failed" for state, _e in calls.values()), calls
    monkeypatch.undo()  # space again: the rerun resumes and scores the rest
    again = score_folder(db_cli, folder, day)
    assert again.exit_code == 0, again.output
    status, calls = _calls(engine, folder, day)
    assert status == "done" and {s for s, _e in calls.values()} == {"scored"}, calls


def test_no_space_left_in_a_worker_process_ends_the_run(
        model_id: int, engine: Engine, bank: ClipBank, tmp_path: Path,
        no_space_scoring_call_0002: None) -> None:
    from etl.runs.batch import score_batch

    generate_calls(tmp_path / "b", n_calls=3, minutes=0.15, bank=bank, seed=265)
    with pytest.raises(OSError) as raised:
        score_batch(engine, tmp_path / "b", batch_date=dt.date(2024, 7, 7), workers=2,
                    start_method="fork")
    assert raised.value.errno == errno.ENOSPC
    _status, calls = _calls(engine, tmp_path / "b", "2024-07-07")
    assert calls["call_0002"][0] in {"pending", "claimed"}, calls
    assert not any(state == "failed" for state, _e in calls.values()), calls
