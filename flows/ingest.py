"""Ingest flow: demographics, crowd votes and clips of one corpus, recorded as an ingest run.

Tasks are thin wrappers over ``etl.corpora.ingest``; each opens its own session and owns its
transactions (the clips task commits once per chunk, so an interrupted run keeps whole chunks). No retries: ingest is idempotent, so the
retry for a failed run is simply running it again, and automatic retries would misreport counts.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prefect import flow, task
from prefect.cache_policies import NONE
from tqdm import tqdm

from db.engine import cached_engine, session_factory, session_scope
from etl.corpora.cremad_demographics import load_demographics
from etl.corpora.cremad_votes import load_votes
from etl.corpora.ingest import (
    DEFAULT_CHUNK_SIZE,
    check_folder,
    finish_run,
    folder_candidates,
    iter_ingest_chunks,
    start_run,
)
from etl.corpora.ingest_run import IngestCounts
from etl.corpora.manifest import manifest_candidates
from etl.corpora.parsers import MANIFEST, check_corpus
from flows.database import database_url


@dataclass(slots=True)
class IngestReport:
    """Everything one ingest run did, per step; ``total`` sums the steps."""

    run_id: int
    corpus: str
    clips: IngestCounts | None = None
    demographics: IngestCounts | None = None
    votes: IngestCounts | None = None
    total: IngestCounts = field(default_factory=IngestCounts)

    def as_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id, "corpus": self.corpus, **self.total.as_dict(),
            "problems": [{"path": p.path, "row": p.row_number, "reason": p.reason}
                         for p in self.total.problems],
        }


def combine(report: IngestReport) -> IngestCounts:
    """Run totals: file counts are the clips'; CSV steps add actors, votes and failed rows."""
    total = IngestCounts()
    if report.clips is not None:
        total.merge(report.clips)
    for step in (report.demographics, report.votes):
        if step is not None:
            total.actors_added += step.actors_added
            total.votes_added += step.votes_added
            total.failed += step.failed
            total.problems.extend(step.problems)
    return total


@task(name="start-ingest-run", cache_policy=NONE)
def start_run_task(url: str, corpus: str, path: str | None, options: dict[str, Any]) -> int:
    with session_scope(cached_engine(url)) as session:
        return start_run(session, corpus=corpus, path=path, options=options)


@task(name="load-demographics", cache_policy=NONE)
def demographics_task(url: str, run_id: int, corpus: str, csv_path: str) -> IngestCounts:
    with session_scope(cached_engine(url)) as session:
        return load_demographics(session, csv_path=Path(csv_path), run_id=run_id, corpus=corpus)


@task(name="load-votes", cache_policy=NONE)
def votes_task(url: str, run_id: int, corpus: str, csv_path: str) -> IngestCounts:
    with session_scope(cached_engine(url)) as session:
        return load_votes(session, csv_path=Path(csv_path), run_id=run_id, corpus=corpus)


@task(name="ingest-clips", cache_policy=NONE)
def clips_task(url: str, run_id: int, corpus: str, path: str, show_progress: bool,
               chunk_size: int, workers: int | None) -> IngestCounts:
    if corpus == MANIFEST:
        candidates = manifest_candidates(Path(path))
        label_source = "manifest"
    else:
        candidates = folder_candidates(corpus, check_folder(Path(path)))
        label_source = f"filename:{corpus}"
    bar = tqdm(total=len(candidates), unit="file", desc=f"ingest {corpus}", file=sys.stderr,
               disable=not show_progress, leave=False)
    counts = IngestCounts()
    with bar, session_factory(cached_engine(url))() as session:
        for done in iter_ingest_chunks(session, corpus=corpus, candidates=candidates,
                                       run_id=run_id, label_source=label_source,
                                       chunk_size=chunk_size, workers=workers):
            session.commit()  # one transaction per chunk
            counts = done.counts
            bar.update(done.files)
    return counts


@task(name="finish-ingest-run", cache_policy=NONE)
def finish_run_task(url: str, run_id: int, counts: IngestCounts, status: str) -> None:
    with session_scope(cached_engine(url)) as session:
        finish_run(session, run_id=run_id, counts=counts, status=status)


@flow(name="ingest", log_prints=False)
def ingest_flow(
    corpus: str,
    path: str | None = None,
    demographics: str | None = None,
    votes: str | None = None,
    show_progress: bool = False,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    workers: int | None = None,
) -> IngestReport:
    """Ingest a corpus folder (or manifest CSV), CREMA-D demographics and/or crowd votes.

    Demographics and votes load before the clips, so new clips get their label confidence at
    insert time (votes loaded later also update existing clips).
    """
    corpus = check_corpus(corpus)
    if path is None and demographics is None and votes is None:
        raise ValueError("nothing to ingest: give a PATH, --demographics or --votes")
    options = {"demographics": demographics, "votes": votes, "chunk_size": chunk_size}
    url = database_url()
    run_id = start_run_task(url, corpus, path, options)
    report = IngestReport(run_id=run_id, corpus=corpus)
    try:
        if demographics is not None:
            report.demographics = demographics_task(url, run_id, corpus, demographics)
        if votes is not None:
            report.votes = votes_task(url, run_id, corpus, votes)
        if path is not None:
            report.clips = clips_task(url, run_id, corpus, path, show_progress, chunk_size,
                                      workers)
    except BaseException:
        finish_run_task(url, run_id, combine(report), "failed")
        raise
    report.total = combine(report)
    finish_run_task(url, run_id, report.total, "succeeded")
    return report
