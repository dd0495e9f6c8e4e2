"""Nightly scoring of call recordings: discover, register, claim, score, write, summarise.

The pieces, in the order a batch goes through them:

1. :func:`discover_calls` reads a folder (and its subfolders) into :class:`CallEntry` rows, from
   ``calls.csv`` where present, else from file names.
2. :func:`register_batch` upserts the ``batches`` row (unique on source path, batch date and
   model version) and one ``calls`` row per entry (unique on batch and call key), all pending.
   Re-registering the same batch adds nothing, so a rerun is idempotent.
3. Workers (``flows.batch_runner.run_worker``, one per process) repeatedly :func:`claim_next` a pending call
   (``FOR UPDATE SKIP LOCKED``; claims older than ``stale_claim_minutes`` are taken over, which
   is how a killed run resumes), score it with :func:`score_recording` (pure compute, no
   database) and write the result in one transaction per call (:func:`write_result`), guarded
   so that a worker whose claim was taken over cannot write. A call that cannot be scored is
   marked failed with its reason (:func:`mark_failed`); the rest of the batch goes on.
4. :func:`finalise_batch` counts what happened into the batch row.

Nothing here commits: ``flows/batch_runner.py`` (the caller) owns the engine, one transaction per
claim and per result, and the worker processes; ``flows/nightly.py`` wraps it in Prefect.

Memory stays bounded for hour-long recordings: the VAD streams the file block by block and the
features are computed per block of windows (with context overlap), so only one block of audio
is in memory at a time.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import soundfile as sf
from sqlalchemy import select, text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import Session

from db.models import Batch, Call, CallSummary
from etl.audio import is_audio_path, load_audio, read_info, sha256_file
from etl.escalation import (
    Escalation,
    EscalationRule,
    OperatingPoint,
    evaluate,
    is_builtin_default,
    resolve_operating_point,
    rules_as_data,
)
from etl.labels import is_negative_class
from etl.summaries import ScoredSegment, SummaryStats, summarise_call
from etl.vad import FrameAnalyser, Region, VadConfig, is_narrowband, windows

if TYPE_CHECKING:
    from etl.registry import LoadedModel

log = logging.getLogger(__name__)

MANIFEST = "calls.csv"
_CHANNEL_WORDS = {"left": 0, "l": 0, "0": 0, "ch0": 0, "right": 1, "r": 1, "1": 1, "ch1": 1}


class CallError(ValueError):
    """A recording that cannot be scored (the reason is stored in ``calls.error``)."""


# --------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ScoringConfig:
    """How calls are cut, scored and summarised.

    Attributes
    ----------
    stereo_roles
        Role per channel of a two-channel file without explicit roles (left, right).
    mono_role
        Role of a single-channel file.
    min_window_s, max_window_s
        Utterance windows scored on their own; shorter speech is talk time but not scored.
    max_duration_s
        Longer recordings fail ("absurdly long") instead of tying up a worker.
    block_s
        Audio decoded per block (bounds memory on long recordings).
    stale_claim_minutes
        A claim older than this is considered abandoned (its worker died) and is taken over.
    rules
        Escalation rules; None (or the built-in defaults :func:`etl.escalation.load_rules`
        returns when nothing is configured) = the model's stored operating point, else the
        built-in defaults (models trained without one).
    confidence_floor
        Segments whose top probability is below it are abstained; None = the model's operating
        point (0 for models without one).
    """

    stereo_roles: tuple[str, str] = ("agent", "customer")
    mono_role: str = "customer"
    min_window_s: float = 1.0
    max_window_s: float = 4.0
    min_duration_s: float = 0.5
    max_duration_s: float = 3 * 3600.0
    block_s: float = 600.0
    context_s: float = 0.5
    vad: VadConfig = field(default_factory=VadConfig)
    streak_gap_s: float = 2.0
    stale_claim_minutes: float = 30.0
    rules: tuple[EscalationRule, ...] | None = None
    retry_failed: bool = False
    confidence_floor: float | None = None

    def options(self) -> dict[str, Any]:
        """JSON-ready record stored in ``batches.options`` (``"rules": "model"`` = the model's
        operating point or, for a model without one, the built-in defaults)."""
        data = asdict(self)
        data["rules"] = "model" if is_builtin_default(self.rules) else rules_as_data(
            self.rules or ())
        return data

    def operating_point(self, model: LoadedModel) -> OperatingPoint:
        """Rules and confidence floor for ``model`` (see ``rules`` and ``confidence_floor``)."""
        return resolve_operating_point(self.rules, model_calibration(model),
                                       confidence_floor=self.confidence_floor)


def model_calibration(model: object) -> Mapping[str, Any] | None:
    """The calibration record of a loaded model (None for models trained without one)."""
    record = getattr(model, "calibration", None)
    if record is None:
        params = getattr(model, "params", None)
        record = params.get("calibration") if isinstance(params, Mapping) else None
    return record if isinstance(record, Mapping) else None


# --------------------------------------------------------------------------------------------
# Discovery
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CallEntry:
    """One recording to score, as found in a batch folder."""

    call_key: str
    path: Path
    agent_id: str | None = None
    queue: str | None = None
    started_at: dt.datetime | None = None
    channel_roles: dict[str, str] = field(default_factory=dict)  # {"0": "agent", ...}
    extra: dict[str, Any] = field(default_factory=dict)


def parse_channel_roles(row: Mapping[str, str], *,
                        stereo_roles: tuple[str, str]) -> dict[str, str]:
    """Channel roles from a calls.csv row: ``customer_channel``/``agent_channel`` (left, right,
    0, 1) or ``channel_roles`` ("agent,customer": role per channel in order). Empty = default."""
    explicit = (row.get("channel_roles") or "").strip()
    if explicit:
        roles = [r.strip() for r in explicit.replace(";", ",").split(",") if r.strip()]
        return {str(i): role for i, role in enumerate(roles)}
    for role in ("customer", "agent"):
        value = (row.get(f"{role}_channel") or "").strip().lower()
        if value:
            if value not in _CHANNEL_WORDS:
                raise ValueError(f"{role}_channel {value!r} is not left/right/0/1")
            channel = _CHANNEL_WORDS[value]
            other = "agent" if role == "customer" else "customer"
            return {str(channel): role, str(1 - channel): other}
    return {}


def _parse_time(value: str | None) -> dt.datetime | None:
    if not value or not value.strip():
        return None
    parsed = dt.datetime.fromisoformat(value.strip())
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def discover_calls(root: Path, *, config: ScoringConfig = ScoringConfig()) -> list[CallEntry]:
    """Every recording under ``root`` (a folder, searched recursively, or a single file).

    In each folder a ``calls.csv`` (columns ``call_id, file`` and optionally ``agent_id, queue,
    started_at, customer_channel | agent_channel | channel_roles``) describes its recordings;
    audio files it does not list are still scored, keyed by their path relative to ``root``.
    A row whose file is missing is kept: it fails with that reason instead of vanishing.

    Raises
    ------
    ValueError
        ``root`` does not exist, or a calls.csv lacks the required columns.
    """
    root = Path(root).expanduser().resolve()
    if root.is_file():
        return [CallEntry(root.stem, root)]
    if not root.is_dir():
        raise ValueError(f"batch path {root} does not exist")
    entries: dict[str, CallEntry] = {}
    listed: set[Path] = set()
    for manifest in sorted(root.rglob(MANIFEST)):
        folder = manifest.parent
        prefix = "" if folder == root else folder.relative_to(root).as_posix() + "/"
        with manifest.open(newline="") as handle:
            reader = csv.DictReader(handle)
            missing = {"call_id", "file"} - set(reader.fieldnames or [])
            if missing:
                raise ValueError(f"{manifest} lacks column(s) {sorted(missing)}; "
                                 "it needs call_id,file[,agent_id,queue,started_at,"
                                 "customer_channel]")
            for number, row in enumerate(reader, start=2):
                try:
                    path = (folder / row["file"].strip()).resolve()
                    entry = CallEntry(
                        call_key=prefix + row["call_id"].strip(),
                        path=path,
                        agent_id=(row.get("agent_id") or "").strip() or None,
                        queue=(row.get("queue") or "").strip() or None,
                        started_at=_parse_time(row.get("started_at")),
                        channel_roles=parse_channel_roles(row, stereo_roles=config.stereo_roles),
                        extra={k: v for k, v in row.items()
                               if k and k not in _KNOWN_COLUMNS and v not in (None, "")},
                    )
                except ValueError as exc:
                    raise ValueError(f"{manifest} line {number}: {exc}") from None
                entries[entry.call_key] = entry
                listed.add(path)
    for path in sorted(p for p in root.rglob("*") if p.is_file() and is_audio_path(p)):
        resolved = path.resolve()
        if resolved in listed:
            continue
        key = path.relative_to(root).with_suffix("").as_posix()
        entries.setdefault(key, CallEntry(key, resolved))
    return sorted(entries.values(), key=lambda e: e.call_key)


_KNOWN_COLUMNS = {"call_id", "file", "agent_id", "queue", "started_at", "customer_channel",
                  "agent_channel", "channel_roles"}


def resolve_roles(channels: int, explicit: Mapping[str, str], *,
                  config: ScoringConfig) -> dict[int, str]:
    """Channel index -> role for a file with ``channels`` channels."""
    if explicit:
        roles = {int(k): v for k, v in explicit.items() if int(k) < channels}
        if not roles:
            raise CallError(f"calls.csv names channels {sorted(explicit)} but the file has "
                            f"{channels} channel(s)")
        return roles
    if channels == 1:
        return {0: config.mono_role}
    if channels == 2:
        return {0: config.stereo_roles[0], 1: config.stereo_roles[1]}
    raise CallError(f"{channels} channels and no channel roles: add channel_roles to calls.csv")


# --------------------------------------------------------------------------------------------
# Scoring one recording (pure compute)
# --------------------------------------------------------------------------------------------


@dataclass(slots=True)
class CallResult:
    """Everything scoring one recording produces (written by :func:`write_result`)."""

    sample_rate: int
    channels: int
    duration_s: float
    sha256: str
    roles: dict[int, str]
    bandwidth: str
    warnings: list[str]
    speech: dict[str, list[Region]]
    segments: list[ScoredSegment]
    summary: SummaryStats
    escalation: Escalation | None
    seconds: dict[str, float] = field(default_factory=dict)
    confidence_floor: float = 0.0
    rules_source: str = "defaults"


def _block_frames(sr: int, channels: int, block_s: float) -> int:
    # cap a block at ~8 M samples (32 MB float32) whatever the rate and channel count
    return max(int(sr), min(int(block_s * sr), 8_000_000 // max(channels, 1)))


def _iter_blocks(path: Path, *, block_frames: int) -> Iterable[tuple[np.ndarray, int]]:
    """Yield ``((n, channels) float32, sr)`` blocks; non-soundfile formats decode once."""
    try:
        handle = sf.SoundFile(str(path))
    except Exception:  # noqa: BLE001 - MP3/others soundfile cannot open: decode via fallback
        signal, sr = load_audio(path, mono=False)
        data = np.atleast_2d(signal).T
        for start in range(0, len(data), block_frames):
            yield data[start:start + block_frames], sr
        return
    with handle:
        sr = handle.samplerate
        for block in handle.blocks(blocksize=block_frames, dtype="float32", always_2d=True):
            yield block, sr


def _read_span(path: Path, *, start_s: float, end_s: float) -> tuple[np.ndarray, int]:
    """``(n, channels)`` float32 of ``[start_s, end_s)``."""
    signal, sr = load_audio(path, mono=False, start_s=max(start_s, 0.0),
                            duration_s=max(end_s - max(start_s, 0.0), 0.0))
    return np.atleast_2d(signal).T, sr


def score_recording(
    path: Path,
    *,
    model: LoadedModel,
    channel_roles: Mapping[str, str] | None = None,
    config: ScoringConfig = ScoringConfig(),
) -> CallResult:
    """Score one recording with ``model``: VAD per role, windows, features, probabilities.

    Raises
    ------
    AudioError, CallError
        empty / corrupt / unreadable, too long or too short, silent, or no usable channels.
    """
    from etl.features import extract_segments

    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    path = Path(path)
    if not path.is_file():
        raise CallError(f"file not found: {path}")
    info = read_info(path)
    if info.duration_s > config.max_duration_s:
        raise CallError(f"recording is {info.duration_s / 3600:.1f} h long; the limit is "
                        f"{config.max_duration_s / 3600:.1f} h (ScoringConfig.max_duration_s)")
    if info.duration_s < config.min_duration_s:
        raise CallError(f"recording is only {info.duration_s:.2f} s long")
    roles = resolve_roles(info.channels, channel_roles or {}, config=config)
    digest = sha256_file(path)

    # Pass 1: stream the file through one VAD analyser per role channel.
    block_frames = _block_frames(info.sample_rate, info.channels, config.block_s)
    analysers: dict[int, FrameAnalyser] = {}
    # A file of one block is decoded once: its role channels are kept (contiguous) for pass 2.
    first_channels: dict[int, np.ndarray] = {}
    n_blocks = n_frames = 0
    sr = info.sample_rate
    for block, sr in _iter_blocks(path, block_frames=block_frames):
        if not analysers:
            analysers = {ch: FrameAnalyser(sr, config.vad) for ch in roles}
        for ch, analyser in analysers.items():
            channel = np.ascontiguousarray(block[:, ch])
            analyser.feed(channel)
            if n_blocks == 0:
                first_channels[ch] = channel
        n_frames += len(block)
        n_blocks += 1
        if n_blocks > 1:
            first_channels = {}
    if n_frames == 0:
        raise CallError("no audio samples could be decoded")
    duration = n_frames / sr
    loudest = max((float(a.energy_db.max()) for a in analysers.values() if a.energy_db.size),
                  default=-200.0)
    if loudest < -100.0:  # dBFS in the speech band: nothing but (digital) silence
        raise CallError("silent recording (digital silence)")
    speech = {roles[ch]: analyser.regions() for ch, analyser in analysers.items()}
    if not any(speech.values()):
        raise CallError("no speech found (silent or noise-only recording)")
    timings["vad"] = time.perf_counter() - t0

    high_share = float(np.mean([a.high_band_share for a in analysers.values()]))
    narrow = is_narrowband(sr, high_share)
    warnings: list[str] = []
    spec = model.feature_spec
    if narrow and spec.channel == "studio":
        warnings.append(f"narrowband audio scored by studio-trained model {model.name} "
                        f"v{model.version}; retrain on telephony features to match")
        log.warning("%s: %s", path.name, warnings[-1])

    # Pass 2: features per role for its windows, block by block with context on both sides.
    t1 = time.perf_counter()
    wins = {ch: windows(speech[roles[ch]], min_s=config.min_window_s,
                        max_s=config.max_window_s) for ch in roles}
    rows: list[tuple[str, float, float]] = []
    feats: list[np.ndarray] = []
    valid_parts: list[np.ndarray] = []
    single = n_blocks == 1
    block_s = block_frames / sr
    starts = np.arange(0.0, duration, block_s) if not single else np.array([0.0])
    for b0 in starts:
        b1 = duration if single else b0 + block_s
        todo = {ch: [w for w in ws if b0 <= w[0] < b1] for ch, ws in wins.items()}
        if not any(todo.values()):
            continue
        if single:
            channels, offset = first_channels, 0.0
        else:
            offset = max(b0 - config.context_s, 0.0)
            end = min(b1 + config.max_window_s + config.context_s, duration)
            data, _ = _read_span(path, start_s=offset, end_s=end)
            channels = {ch: np.ascontiguousarray(data[:, ch]) for ch in todo}
        for ch, ws in todo.items():
            if not ws:
                continue
            shifted = [(s - offset, e - offset) for s, e in ws]
            X, valid = extract_segments(channels[ch], sr, spec, shifted)
            feats.append(X)
            valid_parts.append(valid)
            rows.extend((roles[ch], s, e) for s, e in ws)
    first_channels = {}
    timings["features"] = time.perf_counter() - t1

    t2 = time.perf_counter()
    point = config.operating_point(model)
    segments: list[ScoredSegment] = []
    if rows:
        X = np.concatenate(feats)
        valid = np.concatenate(valid_parts)
        keep = np.flatnonzero(valid)
        if len(keep):
            # Per role (speaker) normalisation when the model uses it; a role with very few
            # segments is shrunk toward the model's training population (etl.normalise).
            proba = np.asarray(model.predict_proba(X[keep], speakers=[rows[i][0] for i in keep]),
                               dtype=np.float64)
            best = proba.argmax(axis=1)
            for j, i in enumerate(keep):
                role, start, end = rows[i]
                label = model.classes[int(best[j])]
                # rounded as stored, so "confidence < floor" in the table is the abstain rule
                confidence = round(float(proba[j, best[j]]), 4)
                # below the floor the label is kept but trusted for nothing (not negative)
                abstained = confidence < point.confidence_floor
                segments.append(ScoredSegment(
                    role=role, start_s=round(start, 3), end_s=round(end, 3), emotion=label,
                    confidence=confidence,
                    is_negative=is_negative_class(label) and not abstained,
                    probabilities={c: round(float(p), 4)
                                   for c, p in zip(model.classes, proba[j], strict=True)},
                    abstained=abstained))
    segments.sort(key=lambda seg: (seg.start_s, seg.role))
    timings["predict"] = time.perf_counter() - t2

    summary = summarise_call(segments, speech=speech, duration_s=duration,
                             streak_gap_s=config.streak_gap_s)
    return CallResult(
        sample_rate=sr, channels=info.channels, duration_s=duration, sha256=digest,
        roles=roles, bandwidth="narrowband" if narrow else "wideband", warnings=warnings,
        speech=speech, segments=segments, summary=summary,
        escalation=evaluate(summary, point.rules), seconds=timings,
        confidence_floor=point.confidence_floor, rules_source=point.source)


# --------------------------------------------------------------------------------------------
# Database: batch registration, claims, results
# --------------------------------------------------------------------------------------------


def register_batch(
    session: Session,
    *,
    source_path: str,
    batch_date: dt.date,
    model_version_id: int,
    entries: Sequence[CallEntry],
    options: Mapping[str, Any] | None = None,
    skip_done_elsewhere: bool = False,
) -> int:
    """Upsert the batch row and its pending call rows; return ``batches.id``.

    With ``skip_done_elsewhere`` (the nightly inbox), recordings whose path was already scored
    (or failed) with this model version in any batch are left out.
    """
    stmt = pg_insert(Batch).values(
        batch_date=batch_date, source_path=source_path, model_version_id=model_version_id,
        options=dict(options or {}),
    ).on_conflict_do_nothing(index_elements=["source_path", "batch_date", "model_version_id"])
    session.execute(stmt)
    batch_id = session.execute(select(Batch.id).where(
        Batch.source_path == source_path, Batch.batch_date == batch_date,
        Batch.model_version_id == model_version_id)).scalar_one()
    if skip_done_elsewhere and entries:
        done = set(session.execute(
            select(Call.path).join(Batch, Batch.id == Call.batch_id).where(
                Batch.model_version_id == model_version_id, Batch.id != batch_id,
                Call.status.in_(("scored", "failed")),
                Call.path.in_([str(e.path) for e in entries]))).scalars())
        entries = [e for e in entries if str(e.path) not in done]
    if entries:
        session.execute(
            pg_insert(Call).on_conflict_do_nothing(index_elements=["batch_id", "call_key"]),
            [{"batch_id": batch_id, "call_key": e.call_key, "path": str(e.path),
              "agent_id": e.agent_id, "queue": e.queue, "started_at": e.started_at,
              "channel_roles": e.channel_roles, "extra": e.extra} for e in entries])
    session.execute(text("UPDATE batches SET n_calls = (SELECT count(*) FROM calls "
                         "WHERE batch_id = :b), status = 'running', finished_at = NULL "
                         "WHERE id = :b"), {"b": batch_id})
    return batch_id


@dataclass(frozen=True, slots=True)
class ClaimedCall:
    id: int
    call_key: str
    path: Path
    channel_roles: dict[str, str]


_CLAIM_SQL = text("""
UPDATE calls SET status = 'claimed', claimed_by = :worker, claimed_at = now(), error = NULL
WHERE id = (
    SELECT id FROM calls
    WHERE batch_id = :batch
      AND (status = 'pending'
           OR (status = 'claimed' AND claimed_at < now() - make_interval(secs => :stale))
           OR (:retry AND status = 'failed'))
    ORDER BY id
    LIMIT 1
    FOR UPDATE SKIP LOCKED)
RETURNING id, call_key, path, channel_roles
""")


def claim_next(session: Session, *, batch_id: int, worker: str,
               stale_after_s: float = 1800.0, retry_failed: bool = False) -> ClaimedCall | None:
    """Claim the next pending (or abandoned) call of the batch for ``worker``; None when done.

    ``FOR UPDATE SKIP LOCKED`` makes concurrent claimers take different rows without waiting;
    commit right after so the claim is visible to the others.
    """
    row = session.execute(_CLAIM_SQL, {"batch": batch_id, "worker": worker,
                                       "stale": float(stale_after_s),
                                       "retry": retry_failed}).first()
    if row is None:
        return None
    return ClaimedCall(row.id, row.call_key, Path(row.path), dict(row.channel_roles or {}))


def _own(session: Session, *, call_id: int, worker: str, values: Mapping[str, Any]) -> bool:
    """Move our claimed call to its final state; False if the claim was taken over meanwhile."""
    assignments = ", ".join(f"{k} = :{k}" for k in values)
    result = session.execute(text(
        f"UPDATE calls SET {assignments} WHERE id = :id AND status = 'claimed' "
        "AND claimed_by = :worker"), {**values, "id": call_id, "worker": worker})
    return result.rowcount == 1  # type: ignore[attr-defined]


def mark_failed(session: Session, *, call_id: int, worker: str, reason: str) -> bool:
    """Record why the call could not be scored (the batch goes on)."""
    return _own(session, call_id=call_id, worker=worker,
                values={"status": "failed", "error": reason[:2000]})


def _copy_segments(session: Session, rows: Sequence[tuple[Any, ...]]) -> None:
    """COPY segment rows into call_segments (one round trip per call)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerows(rows)
    buffer.seek(0)
    raw = session.connection().connection.dbapi_connection
    with raw.cursor() as cursor:  # type: ignore[union-attr]
        cursor.copy_expert(
            "COPY call_segments (call_id, model_version_id, role, start_s, end_s, emotion, "
            "confidence, is_negative, probabilities, abstained) FROM STDIN WITH (FORMAT csv)",
            buffer)


def write_result(session: Session, *, call_id: int, worker: str, model_version_id: int,
                 result: CallResult) -> bool:
    """Segments, summary and the call's final state in the caller's transaction.

    Returns False (writing nothing) if this worker no longer holds the claim.
    """
    extra = {"bandwidth": result.bandwidth, "warnings": result.warnings,
             "roles": {str(k): v for k, v in result.roles.items()},
             "talk_s": {role: round(sum(e - s for s, e in regs), 3)
                        for role, regs in result.speech.items()},
             "seconds": {k: round(v, 4) for k, v in result.seconds.items()},
             "escalation_rules": result.rules_source,
             "confidence_floor": result.confidence_floor}
    owned = _own(session, call_id=call_id, worker=worker, values={
        "status": "scored", "sha256": result.sha256, "sample_rate": result.sample_rate,
        "channels": result.channels, "duration_s": result.duration_s, "error": None,
        "channel_roles": json.dumps({str(k): v for k, v in result.roles.items()}),
        "extra": json.dumps(extra)})
    if not owned:
        return False
    # a rescore of the same call with the same model replaces its rows
    session.execute(text("DELETE FROM call_segments WHERE call_id = :c AND model_version_id = :m"),
                    {"c": call_id, "m": model_version_id})
    if result.segments:
        _copy_segments(session, [
            (call_id, model_version_id, s.role, s.start_s, s.end_s, s.emotion, s.confidence,
             "t" if s.is_negative else "f", json.dumps(dict(s.probabilities)),
             "t" if s.abstained else "f")
            for s in result.segments])
    stats = result.summary.as_dict()
    values = {**stats, "call_id": call_id, "model_version_id": model_version_id,
              "escalated": result.escalation is not None,
              "escalation_rule": result.escalation.rule if result.escalation else None,
              "escalation_reason": result.escalation.reason if result.escalation else None}
    stmt = pg_insert(CallSummary).values(**values)
    session.execute(stmt.on_conflict_do_update(
        index_elements=["call_id", "model_version_id"],
        set_={k: stmt.excluded[k] for k in values if k not in ("call_id", "model_version_id")}))
    return True


@dataclass(frozen=True, slots=True)
class BatchReport:
    batch_id: int
    batch_date: dt.date
    source_path: str
    model_version_id: int
    n_calls: int
    n_scored: int
    n_failed: int
    n_pending: int
    n_escalations: int
    audio_seconds: float
    wall_seconds: float
    failures: dict[str, str]

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["batch_date"] = self.batch_date.isoformat()
        return data


def finalise_batch(session: Session, *, batch_id: int, wall_seconds: float = 0.0) -> BatchReport:
    """Count the batch's calls into its row; status 'done' when nothing is left pending."""
    counts = session.execute(text("""
        SELECT count(*)                                       AS n_calls,
               count(*) FILTER (WHERE c.status = 'scored')    AS n_scored,
               count(*) FILTER (WHERE c.status = 'failed')    AS n_failed,
               count(*) FILTER (WHERE c.status IN ('pending', 'claimed')) AS n_pending,
               count(*) FILTER (WHERE s.escalated)            AS n_escalations,
               COALESCE(sum(c.duration_s) FILTER (WHERE c.status = 'scored'), 0) AS audio_seconds
        FROM calls c
        JOIN batches b ON b.id = c.batch_id
        LEFT JOIN call_summaries s ON s.call_id = c.id AND s.model_version_id = b.model_version_id
        WHERE c.batch_id = :b"""), {"b": batch_id}).one()
    session.execute(text("""
        UPDATE batches SET n_calls = :n_calls, n_scored = :n_scored, n_failed = :n_failed,
               n_escalations = :n_escalations, audio_seconds = :audio_seconds,
               status = CASE WHEN :n_pending = 0 THEN 'done' ELSE 'partial' END,
               finished_at = now()
        WHERE id = :b"""), {**counts._asdict(), "b": batch_id})
    batch = session.get(Batch, batch_id)
    assert batch is not None
    failures = dict(session.execute(select(Call.call_key, Call.error).where(
        Call.batch_id == batch_id, Call.status == "failed").order_by(Call.call_key)).all())
    return BatchReport(batch_id, batch.batch_date, batch.source_path, batch.model_version_id,
                       counts.n_calls, counts.n_scored, counts.n_failed, counts.n_pending,
                       counts.n_escalations, float(counts.audio_seconds), wall_seconds,
                       {k: v or "" for k, v in failures.items()})


def with_rules(config: ScoringConfig, rules: Sequence[EscalationRule] | None) -> ScoringConfig:
    return replace(config, rules=None if rules is None else tuple(rules))
