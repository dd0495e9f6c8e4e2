"""The `ser` command's own options: --version, -v/--verbose and --log-level."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ser.cli import app


@pytest.fixture()
def root_level() -> Iterator[None]:
    before = logging.getLogger().level
    yield
    logging.getLogger().setLevel(before)


def test_version() -> None:
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.output.strip() == f"ser-analytics {version('ser-analytics')}"


@pytest.mark.parametrize(("args", "level"), [
    ([], logging.WARNING), (["-v"], logging.INFO), (["-vv"], logging.DEBUG),
    (["-vv", "--log-level", "error"], logging.ERROR)])
def test_verbosity_sets_the_log_level(args: list[str], level: int, tmp_path: Path,
                                      root_level: None) -> None:
    rules = tmp_path / "rules.toml"
    rules.write_text('[[rules]]\nname = "x"\nmetric = "overtalk_share"\nthreshold = 0.3\n')
    result = CliRunner().invoke(app, [*args, "rules", "check", str(rules)])
    assert result.exit_code == 0, result.output
    assert logging.getLogger().level == level


def test_unknown_log_level_is_refused(root_level: None) -> None:
    result = CliRunner().invoke(app, ["--log-level", "loud", "rules", "--help"])
    assert result.exit_code == 2 and "--log-level" in result.output
