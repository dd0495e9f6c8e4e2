"""The ingest engine: audio files -> clips (content-addressed) and their actors; problems ->
ingest_errors.

A corpus folder's files are labelled by their names (``ingest_folder``); a manifest CSV's rows
(``etl.corpora.manifest``) are candidates of the same engine. CREMA-D's demographics and crowd
votes have loaders of their own (``cremad_demographics``, ``cremad_votes``); every step reports
in the terms of ``etl.corpora.ingest_run``. Plain functions, no Prefect (``flows/ingest.py``
wires them). Design points:

* **Identity is content.** A clip is ``(corpus, sha256)``. Re-ingesting the same folder adds
  nothing; a path whose bytes changed becomes a new row with ``version + 1`` and the previous
  row gets ``is_current = false`` (nothing is overwritten).
* **Headers, not decodes.** Duration, rate and channels come from ``etl.audio.decode.read_info``;
  hashing and header reads run in a thread pool (both release the GIL).
* **Bulk writes.** Existing hashes of the corpus are read in one query; each chunk is written
  with a handful of executemany statements (clips, actors, errors, version flips).
* **Transactions belong to the caller.** Nothing here commits. :func:`iter_ingest_chunks`
  writes one chunk (``chunk_size`` files) per step and yields, so the flow commits each chunk as
  one transaction: an interrupted ingest keeps whole chunks only and a rerun picks up the rest.
* **Bad input lands in ingest_errors** (path, CSV row, reason) and never stops the good files.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import func, literal_column, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import Session

from db.models import Actor, Clip, IngestRun
from etl.audio.decode import AUDIO_EXTENSIONS, AudioError, AudioInfo, read_info, sha256_file
from etl.corpora.cremad_votes import apply_vote_confidence
from etl.corpora.ingest_run import IngestCounts, IngestInputError, IngestProblem, record_problems
from etl.corpora.parsers import (
    FOLDER_CORPORA,
    ClipNameError,
    ParsedClip,
    check_corpus,
    parse_clip_name,
)

DEFAULT_CHUNK_SIZE = 500
ProgressFn = Callable[[int], None]

# Documented demographics for corpora whose speakers are a fixed, published set.
_DOC_SOURCE = {"ravdess": "filename:ravdess (odd actor male, even female)",
               "tess": "documentation:tess", "savee": "documentation:savee",
               "emodb": "documentation:emodb"}


@dataclass(frozen=True, slots=True)
class Candidate:
    """A file to ingest with its labels, or the reason it cannot be (``clip`` is None)."""

    path: Path
    clip: ParsedClip | None
    error: str | None = None
    row_number: int | None = None


@dataclass(frozen=True, slots=True)
class _Scanned:
    candidate: Candidate
    sha256: str | None = None
    info: AudioInfo | None = None
    size_bytes: int = 0
    error: str | None = None


# --------------------------------------------------------------------------------------------
# Runs
# --------------------------------------------------------------------------------------------


def start_run(session: Session, *, corpus: str, path: str | None,
              options: dict[str, Any] | None = None) -> int:
    """Insert an ``ingest_runs`` row (status running) and return its id."""
    run_id = session.execute(
        pg_insert(IngestRun).values(corpus=corpus, path=path, options=options or {})
        .returning(IngestRun.id)).scalar_one()
    return int(run_id)


def finish_run(session: Session, *, run_id: int, counts: IngestCounts,
               status: str = "succeeded") -> None:
    """Write the final counts and status of a run."""
    session.execute(
        update(IngestRun).where(IngestRun.id == run_id).values(
            files_seen=counts.files_seen, added=counts.added, skipped=counts.skipped,
            failed=counts.failed, actors_added=counts.actors_added, status=status,
            finished_at=func.now()))


# --------------------------------------------------------------------------------------------
# Discovery
# --------------------------------------------------------------------------------------------


def _walk_files(root: Path) -> Iterator[Path]:
    """Non-hidden files under ``root``, following symlinked folders (a folder of links to actor
    folders is a common way to pick speakers); each real folder is walked once, so a link back
    up the tree ends instead of looping."""
    seen: set[tuple[int, int]] = set()
    for dirpath, dirnames, names in os.walk(root, followlinks=True):
        stat = os.stat(dirpath)
        if (stat.st_dev, stat.st_ino) in seen:
            dirnames[:] = []
            continue
        seen.add((stat.st_dev, stat.st_ino))
        yield from (Path(dirpath) / name for name in names if not name.startswith("."))


def discover_files(root: Path) -> list[Path]:
    """Every regular, non-hidden file under ``root`` (or ``root`` itself), sorted.

    Raises
    ------
    IngestInputError
        ``root`` does not exist, or holds no files.
    """
    if not Path(root).exists():
        raise IngestInputError(f"path does not exist: {root}")
    # Resolve once: clip paths are then absolute without a realpath() per file.
    root = Path(root).resolve()
    if root.is_file():
        return [root]
    files = sorted(_walk_files(root))
    if not files:
        raise IngestInputError(f"no files under {root}")
    return files


def check_folder(root: Path) -> list[Path]:
    """Files under ``root``; IngestInputError unless at least one has an audio extension."""
    files = discover_files(root)
    if not any(p.suffix.lower() in AUDIO_EXTENSIONS for p in files):
        exts = ", ".join(sorted(e.lstrip(".") for e in AUDIO_EXTENSIONS))
        raise IngestInputError(f"no audio files ({exts}) under {root}")
    return files


def folder_candidates(corpus: str, files: Sequence[Path]) -> list[Candidate]:
    """Parse every name (pure); non-audio extensions and off-scheme names become errors."""
    out: list[Candidate] = []
    for path in files:
        if path.suffix.lower() not in AUDIO_EXTENSIONS:
            out.append(Candidate(path, None, f"not an audio file ({path.suffix or 'no extension'})"))
            continue
        try:
            out.append(Candidate(path, parse_clip_name(corpus, path)))
        except ClipNameError as exc:
            out.append(Candidate(path, None, str(exc)))
    return out


# --------------------------------------------------------------------------------------------
# Core: scan (threads) and write (bulk) in chunks
# --------------------------------------------------------------------------------------------


def _scan(candidate: Candidate) -> _Scanned:
    if candidate.clip is None:
        return _Scanned(candidate, error=candidate.error)
    try:
        # Header first: it rejects empty/non-audio files before paying for a full hash.
        info = read_info(candidate.path)
        size = candidate.path.stat().st_size
        digest = sha256_file(candidate.path)
    except AudioError as exc:
        return _Scanned(candidate, error=str(exc))
    except FileNotFoundError:
        return _Scanned(candidate, error="file not found")
    except OSError as exc:
        return _Scanned(candidate, error=f"cannot read file: {exc.strerror or exc}")
    return _Scanned(candidate, sha256=digest, info=info, size_bytes=size)


@dataclass(slots=True)
class _CorpusState:
    """What the database already holds for one corpus, kept in step with each written chunk."""

    by_sha: dict[str, tuple[int, str, bool]]  # sha256 -> (id, path, is_current)
    current_by_path: dict[str, tuple[int, int, str]]  # path -> (id, version, sha256)
    actor_ids: dict[str, int]


def _load_state(session: Session, corpus: str) -> _CorpusState:
    rows = session.execute(
        select(Clip.id, Clip.path, Clip.sha256, Clip.version, Clip.is_current)
        .where(Clip.corpus == corpus)).all()
    actors = session.execute(
        select(Actor.actor_code, Actor.id).where(Actor.corpus == corpus)).all()
    return _CorpusState(
        by_sha={r.sha256: (r.id, r.path, r.is_current) for r in rows},
        current_by_path={r.path: (r.id, r.version, r.sha256) for r in rows if r.is_current},
        actor_ids={a.actor_code: a.id for a in actors},
    )


def _chunks(items: Sequence[Candidate], size: int) -> Iterator[Sequence[Candidate]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


@dataclass(frozen=True, slots=True)
class ChunkDone:
    """One chunk written (not committed): its size and the run's counts so far."""

    files: int
    counts: IngestCounts


def iter_ingest_chunks(
    session: Session,
    *,
    corpus: str,
    candidates: Sequence[Candidate],
    run_id: int,
    label_source: str,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    workers: int | None = None,
) -> Iterator[ChunkDone]:
    """Hash, read headers and write ``candidates`` as clips of ``corpus``, one chunk per step.

    Each step leaves one chunk written in the session's current transaction; the caller commits
    between steps (one transaction per chunk) or once at the end.

    Parameters
    ----------
    candidates
        Files with parsed labels, or with the reason they cannot be ingested.
    workers
        Threads hashing and reading headers (default: ``min(8, 2 * cpu_count)``).
    """
    if chunk_size < 1:
        raise ValueError("chunk_size must be at least 1")
    state = _load_state(session, corpus)
    counts = IngestCounts()
    n_workers = workers or min(8, 2 * (os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=n_workers, thread_name_prefix="ingest") as pool:
        for chunk in _chunks(candidates, chunk_size):
            scanned = list(pool.map(_scan, chunk))
            part = _write_chunk(session, corpus=corpus, run_id=run_id,
                                label_source=label_source, scanned=scanned, state=state)
            counts.merge(part)
            session.execute(
                update(IngestRun).where(IngestRun.id == run_id).values(
                    files_seen=counts.files_seen, added=counts.added,
                    skipped=counts.skipped, failed=counts.failed,
                    actors_added=counts.actors_added))
            yield ChunkDone(files=len(chunk), counts=counts)


def ingest_candidates(
    session: Session,
    *,
    corpus: str,
    candidates: Sequence[Candidate],
    run_id: int,
    label_source: str,
    progress: ProgressFn | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    workers: int | None = None,
) -> IngestCounts:
    """All of :func:`iter_ingest_chunks` in the caller's transaction; ``progress(n_files)`` per chunk."""
    counts = IngestCounts()
    for done in iter_ingest_chunks(session, corpus=corpus, candidates=candidates, run_id=run_id,
                                   label_source=label_source, chunk_size=chunk_size,
                                   workers=workers):
        counts = done.counts
        if progress is not None:
            progress(done.files)
    return counts


def _write_chunk(session: Session, *, corpus: str, run_id: int, label_source: str,
                 scanned: Sequence[_Scanned], state: _CorpusState) -> IngestCounts:
    plan = _plan_chunk(scanned, state=state, corpus=corpus, run_id=run_id,
                       label_source=label_source)
    counts = plan.counts
    record_problems(session, run_id=run_id, problems=counts.problems)
    if not plan.new_rows and not plan.superseded:
        return counts
    counts.actors_added = _ensure_actors(session, corpus=corpus, scanned=scanned, state=state)
    for row in plan.new_rows:
        row["actor_id"] = state.actor_ids.get(row.pop("_actor_code"))
    if plan.superseded:
        session.execute(update(Clip).where(Clip.id.in_(plan.superseded)).values(is_current=False))
    if plan.restored:
        session.execute(update(Clip).where(Clip.id.in_(plan.restored)).values(is_current=True))
    if plan.new_rows:
        # ON CONFLICT DO NOTHING: a concurrent run may have landed the same content first.
        inserted = session.execute(
            pg_insert(Clip).on_conflict_do_nothing(index_elements=["corpus", "sha256"])
            .returning(Clip.id, Clip.sha256, Clip.path, Clip.version), plan.new_rows).all()
        for r in inserted:
            state.by_sha[r.sha256] = (r.id, r.path, True)
            state.current_by_path[r.path] = (r.id, r.version, r.sha256)
        counts.added = len(inserted)
        counts.skipped += len(plan.new_rows) - len(inserted)
        counts.new_versions = min(counts.new_versions, counts.added)
        if inserted:
            apply_vote_confidence(session, corpus=corpus, clip_ids=[r.id for r in inserted])
    return counts


@dataclass
class _ChunkPlan:
    """What one chunk changes: clip rows to insert, clip ids that stop (``superseded``) or
    become again (``restored``) current, and the counts so far."""

    counts: IngestCounts
    new_rows: list[dict[str, Any]] = field(default_factory=list)
    superseded: list[int] = field(default_factory=list)
    restored: list[int] = field(default_factory=list)


def _plan_chunk(scanned: Sequence[_Scanned], *, state: _CorpusState, corpus: str, run_id: int,
                label_source: str) -> _ChunkPlan:
    """Sort the scanned files into failures, known content, new clips and new versions of a
    path; ``state`` reserves each new clip so a duplicate later in the run is a skip."""
    plan = _ChunkPlan(IngestCounts(files_seen=len(scanned)))
    counts = plan.counts
    for item in scanned:
        cand = item.candidate
        if item.error is not None or item.sha256 is None or item.info is None:
            counts.problems.append(IngestProblem(str(cand.path), item.error or "unreadable",
                                                 cand.row_number))
            counts.failed += 1
            continue
        assert cand.clip is not None
        path = os.path.abspath(cand.path)
        if item.sha256 in state.by_sha:
            _known_content(plan, item, path=path, state=state)
            continue
        version = 1
        previous = state.current_by_path.get(path)
        if previous is not None:  # same path, new bytes: a new version, never an overwrite
            plan.superseded.append(previous[0])
            version = previous[1] + 1
            counts.new_versions += 1
        plan.new_rows.append(_clip_row(corpus, path, cand.clip, item, version=version,
                                       run_id=run_id, label_source=label_source))
        # Reserve now so a duplicate later in the same run is a skip, not a conflict.
        state.by_sha[item.sha256] = (-1, path, True)
        state.current_by_path[path] = (-1, version, item.sha256)
    return plan


def _known_content(plan: _ChunkPlan, item: _Scanned, *, path: str, state: _CorpusState) -> None:
    """A file whose bytes are already a clip: skipped, after restoring the earlier version of
    its path it reverted to, or reporting a second file with the same bytes."""
    assert item.sha256 is not None
    known_id, known_path, known_current = state.by_sha[item.sha256]
    current = state.current_by_path.get(path)
    # Content reverted to an earlier version of this path: make that row current again.
    if not known_current and known_path == path and current and current[0] != known_id:
        plan.superseded.append(current[0])
        plan.restored.append(known_id)
        state.by_sha[item.sha256] = (known_id, path, True)
        state.current_by_path[path] = (known_id, current[1], item.sha256)
    elif known_path != path and path not in state.current_by_path \
            and os.path.exists(known_path):
        # Two files, same bytes (RAVDESS has one such pair): one clip, reported each run.
        # (If the known path is gone, the file was moved: a plain skip.)
        plan.counts.duplicates += 1
        plan.counts.problems.append(IngestProblem(
            str(item.candidate.path), f"duplicate: same content as {known_path}; not added again",
            item.candidate.row_number))
    plan.counts.skipped += 1


def _clip_row(corpus: str, path: str, clip: ParsedClip, item: _Scanned, *, version: int,
              run_id: int, label_source: str) -> dict[str, Any]:
    info = item.info
    assert info is not None
    return {
        "corpus": corpus, "path": path, "clip_name": Path(path).stem, "sha256": item.sha256,
        "version": version, "is_current": True, "_actor_code": clip.actor_code,
        "emotion": clip.emotion, "emotion_code": clip.emotion_code,
        "intensity": clip.intensity, "statement": clip.statement,
        "repetition": clip.repetition, "label_source": label_source,
        "audio_format": info.audio_format[:16], "sample_rate": info.sample_rate,
        "channels": info.channels, "frames": info.frames, "duration_s": info.duration_s,
        "size_bytes": item.size_bytes, "extra": clip.extra, "ingest_run_id": run_id,
    }


def _ensure_actors(session: Session, *, corpus: str, scanned: Sequence[_Scanned],
                   state: _CorpusState) -> int:
    """Insert actors first seen in this chunk (with any documented sex/age); return # new."""
    wanted: dict[str, dict[str, Any]] = {}
    for item in scanned:
        clip = item.candidate.clip
        if item.error is None and clip is not None and clip.actor_code not in state.actor_ids:
            wanted.setdefault(clip.actor_code, {
                "corpus": corpus, "actor_code": clip.actor_code, "sex": clip.sex,
                "age": clip.age,
                "demographics_source": _DOC_SOURCE.get(corpus) if clip.sex or clip.age else None,
            })
    if not wanted:
        return 0
    stmt = pg_insert(Actor).values(list(wanted.values()))
    # An actor loaded from a demographics CSV keeps its values; blanks are filled in.
    stmt = stmt.on_conflict_do_update(
        index_elements=["corpus", "actor_code"],
        set_={"sex": func.coalesce(Actor.sex, stmt.excluded.sex),
              "age": func.coalesce(Actor.age, stmt.excluded.age)},
    ).returning(Actor.id, Actor.actor_code, literal_column("(xmax = 0)").label("inserted"))
    rows = session.execute(stmt).all()
    state.actor_ids.update({r.actor_code: r.id for r in rows})
    return sum(1 for r in rows if r.inserted)


# --------------------------------------------------------------------------------------------
# Entry points
# --------------------------------------------------------------------------------------------


def ingest_folder(
    session: Session,
    *,
    corpus: str,
    root: Path,
    run_id: int,
    progress: ProgressFn | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    workers: int | None = None,
) -> IngestCounts:
    """Ingest every file under ``root`` as clips of a named corpus (labels from file names).

    Raises
    ------
    IngestInputError
        ``root`` is missing, empty, or holds no audio files.
    ValueError
        unknown corpus (or ``manifest``: use ``etl.corpora.manifest.load_manifest``).
    """
    corpus = check_corpus(corpus)
    if corpus not in FOLDER_CORPORA:
        raise ValueError(f"{corpus} is not labelled by file names; use load_manifest")
    candidates = folder_candidates(corpus, check_folder(Path(root)))
    return ingest_candidates(session, corpus=corpus, candidates=candidates, run_id=run_id,
                             label_source=f"filename:{corpus}", progress=progress,
                             chunk_size=chunk_size, workers=workers)
