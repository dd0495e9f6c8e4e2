"""Calls scored with a voice-encoder model (``richvoice``): scored like any call, nothing
voice-derived is stored for a call, and missing or altered weights refuse the run before it
registers anything (one line, exit 2, the fix named)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, text
from typer.testing import CliRunner

from db.engine import session_scope
from etl.features.voice import weights as voice
from etl.features.voice.params import EMBEDDING_DIM
from etl.runs.batch import score_batch
from etl.scoring.config import ScoringConfig
from etl.synthetic.calls import generate_calls
from etl.synthetic.clips import ClipBank
from ser.cli import app
from tests.conftest import truncate_all
from tests.utils.nightly import train_tiny_model

CONFIG = ScoringConfig(max_duration_s=45.0)
# Tables that hold corpus clips' vectors or models' training statistics, never call audio.
CORPUS_AND_MODEL_TABLES = {"clip_features", "feature_sets", "model_versions"}


@pytest.fixture(scope="module")
def voice_model(engine: Engine, bank: ClipBank) -> Iterator[int]:
    voice.install_weights()
    truncate_all(engine)
    with session_scope(engine) as session:
        version_id = train_tiny_model(session, bank=bank, feature_set="richvoice",
                                      name="tiny-voice")
    yield version_id
    truncate_all(engine)


def _array_and_json_columns(engine: Engine) -> list[tuple[str, str, str]]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(text(
            "SELECT table_name, column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = 'public' AND data_type IN ('ARRAY', 'jsonb', 'json', 'bytea') "
            "AND table_name IN (SELECT table_name FROM information_schema.tables "
            "WHERE table_schema = 'public' AND table_type = 'BASE TABLE')"))]


def _largest_values(engine: Engine) -> dict[str, int]:
    """Per (table.column) outside the corpus/model tables: the most numbers one value holds
    (array elements, or numbers in a JSON document), and the longest bytea."""
    out = {}
    with engine.connect() as conn:
        for table, column, kind in _array_and_json_columns(engine):
            if table in CORPUS_AND_MODEL_TABLES:
                continue
            if kind == "ARRAY":
                expr = f'coalesce(max(cardinality("{column}")), 0)'
            elif kind == "bytea":
                expr = f'coalesce(max(octet_length("{column}")), 0) / 4'
            else:  # count the numbers in the document's text
                expr = (f"coalesce(max(array_length(regexp_split_to_array(\"{column}\"::text, "
                        f"'[-0-9.eE]+'), 1) - 1), 0)")
            out[f"{table}.{column}"] = int(conn.execute(
                text(f'SELECT {expr} FROM "{table}"')).scalar_one())
    return out


def test_voice_model_scores_calls_and_stores_nothing_voice_derived(
        engine: Engine, voice_model: int, bank: ClipBank, tmp_path: Path) -> None:
    generate_calls(tmp_path, n_calls=2, minutes=0.3, bank=bank, seed=11)
    with engine.connect() as conn:
        clip_rows = conn.execute(text("SELECT count(*) FROM clip_features")).scalar_one()
    report = score_batch(engine, tmp_path, batch_date=dt.date(2024, 7, 1), workers=1,
                         config=CONFIG)
    assert report.n_scored == 2 and report.n_failed == 0
    with engine.connect() as conn:
        segments = conn.execute(text(
            "SELECT count(*) FROM call_segments WHERE model_version_id = :m"),
            {"m": voice_model}).scalar_one()
        assert conn.execute(text("SELECT count(*) FROM clip_features")).scalar_one() == clip_rows
    assert segments > 4
    largest = _largest_values(engine)
    assert "call_segments.probabilities" in largest  # the scan reaches the call tables
    too_big = {name: n for name, n in largest.items() if n >= EMBEDDING_DIM}
    assert not too_big, f"call data holds vectors as long as a voice embedding: {too_big}"


@pytest.mark.parametrize("damage", ["missing", "altered"])
def test_missing_or_altered_weights_refuse_the_run_before_it_registers(
        engine: Engine, voice_model: int, bank: ClipBank, tmp_path: Path, damage: str,
        monkeypatch: pytest.MonkeyPatch, db_cli: CliRunner) -> None:
    weights = tmp_path / "weights" / "resemblyzer-ge2e-0.1.4.pt"
    weights.parent.mkdir()
    if damage == "altered":
        data = bytearray(voice.weights_path().read_bytes())
        data[len(data) // 2] ^= 0xFF
        weights.write_bytes(bytes(data))
    monkeypatch.setattr(voice, "weights_path", lambda: weights)
    calls = tmp_path / "calls"
    generate_calls(calls, n_calls=1, minutes=0.2, bank=bank, seed=12)
    with engine.connect() as conn:
        batches = conn.execute(text("SELECT count(*) FROM batches")).scalar_one()
    result = db_cli.invoke(app, ["score", str(calls), "--model", str(voice_model)])
    assert result.exit_code == 2, result.output
    assert "ser encoder install" in result.output
    assert "Traceback" not in result.output
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM batches")).scalar_one() == batches
