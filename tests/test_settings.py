"""The settings object (`config.Settings`): read from the environment and `.env`, read only at
the edges, and SER_RULES as the escalation rules of every command given no --rules."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, text
from typer.testing import CliRunner

from config import Settings, get_settings
from db.engine import session_scope
from etl.synthetic.calls import generate_calls
from etl.synthetic.clips import ClipBank
from ser.cli import app
from tests.utils.nightly import train_tiny_model

RULE = {"name": "from_settings", "metric": "overtalk_share", "op": ">=", "threshold": 0.0}


@pytest.fixture()
def no_rules(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    """No rules variable set and a working directory without a `.env`; returns that folder."""
    for name in ("SER_RULES", "SER_ESCALATION_RULES"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    get_settings.cache_clear()
    yield tmp_path
    get_settings.cache_clear()


def test_rules_come_from_the_environment_or_a_dotenv_file(
        no_rules: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().rules is None
    (no_rules / ".env").write_text("SER_RULES=/srv/ser/rules.toml\nSER_WORKERS=3\n")
    settings = Settings()
    assert (settings.rules, settings.workers) == ("/srv/ser/rules.toml", 3)
    monkeypatch.setenv("SER_RULES", "[]")  # the environment wins over .env
    assert Settings().rules == "[]"
    monkeypatch.delenv("SER_RULES")
    (no_rules / ".env").unlink()
    monkeypatch.setenv("SER_ESCALATION_RULES", "/etc/ser/rules.json")  # the older name
    assert Settings().rules == "/etc/ser/rules.json"


def test_the_nightly_flow_takes_ser_rules_when_given_none(
        no_rules: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from flows.nightly import scoring_config

    monkeypatch.setenv("SER_RULES", json.dumps([RULE]))
    get_settings.cache_clear()
    assert [r.name for r in scoring_config(None).rules] == ["from_settings"]
    inline = json.dumps([{**RULE, "name": "given"}])
    assert [r.name for r in scoring_config(inline).rules] == ["given"]


def test_rules_preview_without_a_file_needs_ser_rules(no_rules: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    missing = CliRunner().invoke(app, ["rules", "preview", "--batch-date", "2024-01-15"])
    assert missing.exit_code == 2 and "set SER_RULES" in missing.output
    monkeypatch.setenv("SER_RULES", str(no_rules / "nope.toml"))
    get_settings.cache_clear()
    bad = CliRunner().invoke(app, ["rules", "preview", "--batch-date", "2024-01-15"])
    assert bad.exit_code == 2 and "SER_RULES" in bad.output and "does not exist" in bad.output


def test_score_and_preview_use_ser_rules_from_dotenv(
        cli_env: dict[str, str], engine: Engine, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """`.env` works for the rules like for every other variable: `ser score` stores them with
    the batch and `ser rules preview` (no FILE) previews them."""
    bank = ClipBank.synthetic(actors=range(1, 5), per_emotion=1)
    with session_scope(engine) as session:
        train_tiny_model(session, bank=bank)
    generate_calls(tmp_path / "calls", n_calls=1, minutes=0.15, bank=bank, seed=3)
    workdir = tmp_path / "work"
    workdir.mkdir()
    (workdir / ".env").write_text(f"SER_RULES='{json.dumps([RULE])}'\n")
    monkeypatch.chdir(workdir)
    get_settings.cache_clear()
    runner = CliRunner()
    day = dt.date(2024, 1, 15).isoformat()
    scored = runner.invoke(app, ["score", str(tmp_path / "calls"), "--batch-date", day,
                                 "--workers", "1", "--json"])
    assert scored.exit_code == 0, scored.output
    with engine.connect() as conn:
        stored = conn.execute(text("SELECT options -> 'rules' FROM batches")).scalar_one()
    assert [r["name"] for r in stored] == ["from_settings"]
    preview = runner.invoke(app, ["rules", "preview", "--batch-date", day])
    assert preview.exit_code == 0, preview.output
    assert preview.output.startswith(f"SER_RULES on {day}") and "from_settings: 1 call" in preview.output
    # --rules still wins over the setting
    given = runner.invoke(app, ["score", str(tmp_path / "calls"), "--batch-date", "2024-01-16",
                                "--workers", "1", "--rules", json.dumps([{**RULE, "name": "given"}])])
    assert given.exit_code == 0, given.output
    with engine.connect() as conn:
        names = conn.execute(text("SELECT options -> 'rules' -> 0 ->> 'name' FROM batches "
                                  "ORDER BY id")).scalars().all()
    assert names == ["from_settings", "given"]

