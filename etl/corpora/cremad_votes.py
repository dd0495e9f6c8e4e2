"""CREMA-D's crowd ratings (``tabulatedVotes.csv``): ``label_votes`` and each clip's label
confidence (the share of raters who heard its labelled emotion).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import literal_column, text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import Session

from db.models import LabelVote
from etl.corpora.ingest_run import (
    IngestCounts,
    IngestInputError,
    IngestProblem,
    read_csv,
    record_problems,
)
from etl.corpora.parsers import CREMAD_EMOTIONS, ClipNameError, parse_cremad_name

# tabulatedVotes.csv letters -> canonical emotion; the row id's first digit is the query type.
_VOTE_LETTERS = {code[0]: emotion for code, emotion in CREMAD_EMOTIONS.items()}
_QUERY_TYPES = {"1": "voice", "2": "face", "3": "multimodal"}
_VOTE_COLUMNS = ("fileName", "numResponses", "agreement", "emoVote")


def load_votes(
    session: Session,
    *,
    csv_path: Path,
    run_id: int,
    corpus: str = "crema-d",
) -> IngestCounts:
    """Load CREMA-D crowd ratings (``tabulatedVotes.csv``) into ``label_votes``.

    The file has one row per clip and rating mode (ids 1xxxxx voice-only, 2xxxxx face-only,
    3xxxxx audio-visual). Voice-only ratings are the primary ones (this product hears audio);
    all modes are kept in ``votes``. ``clips.label_confidence`` of existing clips is set to the
    share of voice raters who chose the clip's labelled emotion (clips ingested later get it
    at insert time).
    """
    header, rows = read_csv(csv_path)
    missing = [c for c in _VOTE_COLUMNS if c not in header]
    if missing:
        raise IngestInputError(f"votes file {csv_path} lacks column(s) {', '.join(missing)}")
    counts = IngestCounts(files_seen=len(rows))
    per_clip = _votes_per_clip(header, rows, csv_path=csv_path, problems=counts.problems)
    records = _vote_records(per_clip, corpus=corpus)
    counts.failed = len(counts.problems)
    record_problems(session, run_id=run_id, problems=counts.problems)
    if records:
        stmt = pg_insert(LabelVote)
        stmt = stmt.on_conflict_do_update(
            index_elements=["corpus", "clip_name"],
            set_={c: stmt.excluded[c] for c in ("num_responses", "agreement", "vote_emotion",
                                                "votes")},
        ).returning(literal_column("(xmax = 0)").label("inserted"))
        flags = session.execute(stmt, records).scalars().all()
        counts.votes_added = sum(1 for flag in flags if flag)
        counts.added = counts.votes_added
        counts.skipped = len(flags) - counts.votes_added
    apply_vote_confidence(session, corpus=corpus)
    return counts


def _votes_per_clip(header: list[str], rows: Sequence[tuple[int, list[str]]], *,
                    csv_path: Path, problems: list[IngestProblem]) -> dict[str, dict[str, Any]]:
    """``{clip name: {"label": emotion, mode: ratings, ...}}`` from the rows of a votes file;
    a malformed row is appended to ``problems`` (with its line) instead."""
    col = {h: i for i, h in enumerate(header)}
    per_clip: dict[str, dict[str, Any]] = {}
    for line, row in rows:
        try:
            if len(row) != len(header):
                raise ValueError(f"expected {len(header)} fields, got {len(row)}")
            name = row[col["fileName"]].strip()
            try:
                label = parse_cremad_name(name).emotion
            except ClipNameError as exc:
                raise ValueError(f"{name!r}: {exc}") from None
            mode = _QUERY_TYPES.get(row[0].strip()[:1], "voice") if len(row[0]) == 6 else "voice"
            n = int(row[col["numResponses"]])
            agreement = float(row[col["agreement"]])
            tallies = {emo: int(float(row[col[letter]])) for letter, emo in _VOTE_LETTERS.items()
                       if letter in col}
        except ValueError as exc:
            problems.append(IngestProblem(str(csv_path), str(exc), line))
            continue
        vote = ":".join(_VOTE_LETTERS.get(v, v) for v in row[col["emoVote"]].split(":"))
        per_clip.setdefault(name, {"label": label})[mode] = {
            "num_responses": n, "agreement": agreement, "vote": vote, "counts": tallies,
            "label_share": (tallies.get(label, 0) / n) if n and tallies else None,
        }
    return per_clip


def _vote_records(per_clip: dict[str, dict[str, Any]], *, corpus: str) -> list[dict[str, Any]]:
    """``label_votes`` rows: the primary mode's ratings (voice, else audio-visual, else face),
    every mode kept in ``votes``."""
    records: list[dict[str, Any]] = []
    for name, modes in per_clip.items():
        primary = next((modes[m] for m in ("voice", "multimodal", "face") if m in modes), None)
        if primary is None:
            continue
        votes: dict[str, Any] = dict(modes)
        if primary["label_share"] is not None:
            votes["label_share"] = primary["label_share"]
        records.append({"corpus": corpus, "clip_name": name,
                        "num_responses": primary["num_responses"],
                        "agreement": primary["agreement"],
                        "vote_emotion": primary["vote"][:32], "votes": votes})
    return records


def apply_vote_confidence(session: Session, *, corpus: str,
                           clip_ids: Sequence[int] | None = None) -> int:
    """clips.label_confidence := share of raters who heard the clip's labelled emotion."""
    where_ids = "AND c.id = ANY(:ids)" if clip_ids is not None else ""
    result = session.execute(text(f"""
        UPDATE clips AS c
           SET label_confidence = (lv.votes ->> 'label_share')::float
          FROM label_votes AS lv
         WHERE lv.corpus = c.corpus AND lv.clip_name = c.clip_name
           AND c.corpus = :corpus AND lv.votes ? 'label_share' {where_ids}
           AND c.label_confidence IS DISTINCT FROM (lv.votes ->> 'label_share')::float
    """), {"corpus": corpus, "ids": list(clip_ids or [])})
    return int(result.rowcount or 0)  # type: ignore[attr-defined]
