"""What every ingest step shares: its counts, the problems it records in ``ingest_errors``,
the error for unusable input, and reading a CSV input (manifest, demographics, votes).

The engine (``etl.corpora.ingest``) and the CSV loaders (``manifest``, ``cremad_demographics``,
``cremad_votes``) report in these terms, so ``flows/ingest.py`` adds up their steps alike.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import Session

from db.models import IngestError


class IngestInputError(ValueError):
    """The input as a whole is unusable (missing path, empty folder, CSV without its columns)."""


@dataclass(frozen=True, slots=True)
class IngestProblem:
    """One file or CSV row that did not land, and why."""

    path: str
    reason: str
    row_number: int | None = None


@dataclass(slots=True)
class IngestCounts:
    """What one ingest step did.

    ``added`` includes ``new_versions``; ``skipped`` includes ``duplicates`` (files whose bytes
    equal another file's, which is reported in ``problems`` but is not a failure).
    """

    files_seen: int = 0
    added: int = 0
    new_versions: int = 0
    skipped: int = 0
    duplicates: int = 0
    failed: int = 0
    actors_added: int = 0
    votes_added: int = 0
    problems: list[IngestProblem] = field(default_factory=list)

    def merge(self, other: IngestCounts) -> IngestCounts:
        for name in ("files_seen", "added", "new_versions", "skipped", "duplicates", "failed",
                     "actors_added", "votes_added"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.problems.extend(other.problems)
        return self

    def as_dict(self) -> dict[str, int]:
        return {"files_seen": self.files_seen, "added": self.added,
                "new_versions": self.new_versions, "skipped": self.skipped,
                "duplicates": self.duplicates,
                "failed": self.failed, "actors_added": self.actors_added,
                "votes_added": self.votes_added}




def read_csv(csv_path: Path) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """Header and (line number, fields) rows; IngestInputError for a missing/empty file."""
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise IngestInputError(f"CSV file does not exist: {csv_path}")
    with csv_path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if not header:
            raise IngestInputError(f"CSV file is empty: {csv_path}")
        rows = [(reader.line_num, row) for row in reader if any(cell.strip() for cell in row)]
    return [h.strip() for h in header], rows



def record_problems(session: Session, *, run_id: int, problems: Sequence[IngestProblem]) -> None:
    """One ``ingest_errors`` row per problem of run ``run_id``."""
    if problems:
        session.execute(pg_insert(IngestError), [
            {"run_id": run_id, "path": p.path, "row_number": p.row_number, "reason": p.reason}
            for p in problems])

