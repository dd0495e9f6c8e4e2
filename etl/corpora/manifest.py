"""A manifest CSV as a corpus: one row per recording with its path, emotion and speaker.

For recordings whose labels are not in their file names (corpus ``manifest``); the rows become
candidates of the ingest engine (``etl.corpora.ingest``).
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy.orm import Session

from etl.corpora.demographics import parse_age
from etl.corpora.ingest import DEFAULT_CHUNK_SIZE, Candidate, ProgressFn, ingest_candidates
from etl.corpora.ingest_run import IngestCounts, IngestInputError, read_csv
from etl.corpora.parsers import MANIFEST, ParsedClip, canonical_emotion, sex_from_text

_MANIFEST_COLUMNS = {"path": ("path", "file", "filename"), "emotion": ("emotion", "label"),
                     "speaker": ("speaker", "actor", "speaker_id")}
_MANIFEST_OPTIONAL = ("sex", "age", "intensity", "statement")


def manifest_candidates(manifest: Path) -> list[Candidate]:
    """Rows of a manifest CSV as candidates; paths are relative to the manifest's folder.

    Required columns: ``path``, ``emotion``, ``speaker``; optional ``sex``, ``age``,
    ``intensity``, ``statement``; any other column is kept in ``clips.extra``.
    """
    header, rows = read_csv(manifest)
    lower = [h.lower() for h in header]
    index: dict[str, int] = {}
    for key, names in _MANIFEST_COLUMNS.items():
        found = next((lower.index(n) for n in names if n in lower), None)
        if found is None:
            raise IngestInputError(
                f"manifest {manifest} has no {key!r} column; it needs path, emotion, speaker "
                f"(found: {', '.join(header)})")
        index[key] = found
    for key in _MANIFEST_OPTIONAL:
        if key in lower:
            index[key] = lower.index(key)
    extra_cols = [(i, h) for i, h in enumerate(header) if i not in index.values() and h]
    base = Path(manifest).resolve().parent
    out: list[Candidate] = []
    for line, row in rows:
        raw_path = row[index["path"]].strip() if index["path"] < len(row) else ""
        where = base / raw_path if raw_path else Path(manifest)
        if len(row) != len(header):
            out.append(Candidate(where, None, f"expected {len(header)} fields, got {len(row)}",
                                 line))
            continue
        value = {k: row[i].strip() for k, i in index.items()}
        try:
            if not raw_path:
                raise ValueError("empty path")
            if not value["speaker"]:
                raise ValueError("empty speaker")
            emotion = canonical_emotion(value["emotion"])
            sex = sex_from_text(value.get("sex", ""))
            age = parse_age(value.get("age", ""))
        except ValueError as exc:
            out.append(Candidate(where, None, str(exc), line))
            continue
        if not where.is_file():
            out.append(Candidate(where, None, "file not found", line))
            continue
        clip = ParsedClip(
            actor_code=value["speaker"][:64], emotion=emotion, emotion_code=value["emotion"][:16],
            intensity=value.get("intensity") or None, statement=value.get("statement") or None,
            sex=sex, age=age, extra={h: row[i] for i, h in extra_cols},
        )
        out.append(Candidate(where, clip, None, line))
    return out


def load_manifest(
    session: Session,
    *,
    manifest: Path,
    run_id: int,
    progress: ProgressFn | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    workers: int | None = None,
) -> IngestCounts:
    """Ingest the recordings a manifest CSV lists (corpus ``manifest``, label_source manifest)."""
    candidates = manifest_candidates(Path(manifest))
    if not candidates:
        raise IngestInputError(f"manifest {manifest} has no rows")
    return ingest_candidates(session, corpus=MANIFEST, candidates=candidates, run_id=run_id,
                             label_source="manifest", progress=progress,
                             chunk_size=chunk_size, workers=workers)
