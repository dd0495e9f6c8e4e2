"""CREMA-D's ``VideoDemographics.csv``: each actor's age, sex, race and ethnicity.

Upserted into ``actors`` (a clip's actor row may come first from its file name, or later).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from sqlalchemy import literal_column
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import Session

from db.models import Actor
from etl.corpora.demographics import parse_age
from etl.corpora.ingest_run import (
    IngestCounts,
    IngestInputError,
    IngestProblem,
    read_csv,
    record_problems,
)
from etl.corpora.parsers import sex_from_text

_DEMOGRAPHIC_COLUMNS = ("ActorID", "Age", "Sex", "Race", "Ethnicity")


def load_demographics(
    session: Session,
    *,
    csv_path: Path,
    run_id: int,
    corpus: str = "crema-d",
) -> IngestCounts:
    """Upsert actors from a CREMA-D ``VideoDemographics.csv`` (ActorID, Age, Sex, Race, Ethnicity).

    Malformed rows (wrong field count, non-numeric id or age, unknown sex, duplicate id) go to
    ingest_errors with their line number; the rest land. Existing actors are updated.
    """
    header, rows = read_csv(csv_path)
    missing = [c for c in _DEMOGRAPHIC_COLUMNS if c not in header]
    if missing:
        raise IngestInputError(
            f"demographics file {csv_path} lacks column(s) {', '.join(missing)}; expected "
            f"{', '.join(_DEMOGRAPHIC_COLUMNS)}")
    col = {c: header.index(c) for c in _DEMOGRAPHIC_COLUMNS}
    counts = IngestCounts(files_seen=len(rows))
    actors: dict[str, dict[str, Any]] = {}
    source = f"demographics:{Path(csv_path).name}"
    for line, row in rows:
        try:
            if len(row) != len(header):
                raise ValueError(f"expected {len(header)} fields, got {len(row)}")
            actor = row[col["ActorID"]].strip()
            if not re.fullmatch(r"\d{1,8}", actor):
                raise ValueError(f"ActorID {actor!r} is not a number")
            if actor in actors:
                raise ValueError(f"duplicate ActorID {actor}; the first row is kept")
            age = parse_age(row[col["Age"]].strip())
            sex = sex_from_text(row[col["Sex"]])
        except ValueError as exc:
            counts.problems.append(IngestProblem(str(csv_path), str(exc), line))
            continue
        actors[actor] = {
            "corpus": corpus, "actor_code": actor, "age": age, "sex": sex,
            "race": row[col["Race"]].strip()[:64] or None,
            "ethnicity": row[col["Ethnicity"]].strip()[:64] or None,
            "demographics_source": source,
        }
    counts.failed = len(counts.problems)
    record_problems(session, run_id=run_id, problems=counts.problems)
    if actors:
        stmt = pg_insert(Actor).values(list(actors.values()))
        stmt = stmt.on_conflict_do_update(
            index_elements=["corpus", "actor_code"],
            set_={c: stmt.excluded[c] for c in ("age", "sex", "race", "ethnicity",
                                                "demographics_source")},
        ).returning(literal_column("(xmax = 0)").label("inserted"))
        inserted = session.execute(stmt).scalars().all()
        counts.actors_added = sum(1 for flag in inserted if flag)
        counts.added = counts.actors_added
        counts.skipped = len(inserted) - counts.actors_added
    return counts
