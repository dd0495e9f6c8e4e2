"""`ser score` on a folder through the CLI, and the batch it made: shared by the hostile-input
tests."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from click.testing import Result
from sqlalchemy import Connection, text
from typer.testing import CliRunner


def score_folder(runner: CliRunner, folder: Path, day: str, *options: str) -> Result:
    """``ser score FOLDER --batch-date DAY --workers 1 [options]``."""
    from ser.cli import app

    return runner.invoke(app, ["score", str(folder), "--batch-date", day, "--workers", "1",
                               *options])


def folder_batch(conn: Connection, folder: Path, day: str) -> tuple[int, str]:
    """``(id, status)`` of the batch of ``folder`` on ``day``."""
    batch_id, status = conn.execute(text(
        "SELECT id, status FROM batches WHERE source_path = :p AND batch_date = :d"),
        {"p": str(folder.resolve()), "d": dt.date.fromisoformat(day)}).one()
    return int(batch_id), str(status)
