"""A small synthetic training corpus in the database, built with the real ingest + features code.

``populate(session, root, ...)`` writes a RAVDESS-layout synthetic corpus (etl.synthetic.speech), ingests it
(etl.corpora.ingest) and stores whole-clip features (etl.features.extraction) for the requested feature sets.
Nothing here commits; callers own the transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.orm import Session

from etl.corpora.ingest import finish_run, ingest_folder, start_run
from etl.features.extraction import extract_files, feature_spec
from etl.features.store import ensure_feature_set, store_results
from etl.synthetic.speech import write_ravdess_corpus


@dataclass(frozen=True, slots=True)
class TrainData:
    root: Path
    files: list[Path]
    feature_set_ids: dict[tuple[str, str], int]


def populate(
    session: Session,
    root: Path,
    *,
    actors: range | list[int] = range(1, 6),
    emotions: tuple[str, ...] = ("neutral", "happy", "sad", "angry"),
    feature_sets: tuple[tuple[str, str], ...] = (("rich", "studio"),),
    duration_s: float = 1.5,
) -> TrainData:
    """Write, ingest and featurise a synthetic corpus (``corpus='ravdess'``)."""
    files = write_ravdess_corpus(root, actors=actors, emotions=emotions, statements=(1, 2),
                                 duration_s=duration_s)
    run_id = start_run(session, corpus="ravdess", path=str(root))
    counts = ingest_folder(session, corpus="ravdess", root=root, run_id=run_id)
    finish_run(session, run_id=run_id, counts=counts)
    rows = session.execute(text("SELECT id, path FROM clips WHERE is_current ORDER BY id")).all()
    ids: dict[tuple[str, str], int] = {}
    for name, channel in feature_sets:
        spec = feature_spec(name, channel)
        fs_id = ensure_feature_set(session, spec)
        results = extract_files([(int(r[0]), str(r[1])) for r in rows], spec)
        store_results(session, feature_set_id=fs_id, results=results)
        ids[(name, channel)] = fs_id
    return TrainData(root=root, files=files, feature_set_ids=ids)
