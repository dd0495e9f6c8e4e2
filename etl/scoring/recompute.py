"""Recompute the summaries, conversation metrics and escalations of an already-scored batch.

For calls scored before the conversation metrics existed, or after the rules changed: each
scored call's stored segments (emotion, confidence, abstained: the model's work) are read back,
and only the voice-activity pass runs again on its recording (:class:`etl.audio.vad.FrameAnalyser`
on the role channels, with the batch's own VAD settings, as :func:`etl.scoring.recording.score_recording`
does) for the speech regions and frame energies the summary and the metrics need. Features are
not extracted and nothing is predicted, so ``call_segments`` stay as they are.

Per call, :func:`recompute_call` rewrites the ``call_summaries`` row (summary, conversation
metrics, escalation with the current rules: the configured ones, else the operating point the
batch's model version uses now, its site point included, as nightly scoring would) and the
``call_events`` rows in the caller's transaction. :func:`run_recompute` runs a batch call by
call, one transaction each.

Those two tables have one writer each, here (:func:`write_summary`, :func:`replace_events`):
scoring's first write of a call (``etl.runs.results.write_result``) uses them too, so a
recomputed row is written exactly as a scored one.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import io
import json
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import Session
from tqdm import tqdm

from db.models import CallSummary
from etl.audio.decode import AudioError, read_info, sha256_file
from etl.audio.intervals import Region
from etl.audio.vad import VadConfig
from etl.scoring.audio_passes import CallError, voice_pass
from etl.scoring.call_metrics import (
    CallEvent,
    CallMetrics,
    MetricsConfig,
    RoleEnergy,
    compute_call_metrics,
)
from etl.scoring.config import ScoringConfig
from etl.scoring.escalation import (
    Escalation,
    EscalationRule,
    evaluate,
    metric_values,
    resolve_operating_point,
    rules_as_data,
)
from etl.scoring.point_in_use import calibration_in_use
from etl.scoring.rollup import refresh_rollup
from etl.scoring.summaries import ScoredSegment, SummaryStats, summarise_call


@dataclass(frozen=True, slots=True)
class RecomputeTarget:
    """One scored call to recompute, with what its batch was scored with."""

    call_id: int
    call_key: str
    path: str
    sha256: str | None
    roles: dict[int, str]
    batch_id: int
    model_version_id: int
    config: ScoringConfig
    rules: tuple[EscalationRule, ...]
    rules_source: str  # "configured", "site", "model", "defaults" (calls.extra.escalation_rules)


@dataclass(frozen=True, slots=True)
class Recomputed:
    summary: SummaryStats
    metrics: CallMetrics
    events: list[CallEvent]
    escalation: Escalation | None


@dataclass(slots=True)
class RecomputeReport:
    batch_ids: list[int]
    n_calls: int = 0
    n_recomputed: int = 0
    n_escalations: int = 0
    n_changed: int = 0  # calls whose escalation rule is not the one stored before
    failures: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def config_from_options(options: Mapping[str, Any] | None) -> ScoringConfig:
    """The VAD, streak and metric settings a batch was scored with (``batches.options``);
    settings a batch predates keep today's defaults."""
    opts = dict(options or {})

    def known(cls: type, data: object) -> dict[str, Any]:
        names = {f.name for f in dataclasses.fields(cls)}
        items = data.items() if isinstance(data, Mapping) else ()
        return {k: tuple(v) if isinstance(v, list) else v for k, v in items if k in names}

    base = ScoringConfig()
    return dataclasses.replace(
        base, vad=VadConfig(**known(VadConfig, opts.get("vad"))),
        metrics=MetricsConfig(**known(MetricsConfig, opts.get("metrics"))),
        streak_gap_s=float(opts.get("streak_gap_s", base.streak_gap_s)),
        block_s=float(opts.get("block_s", base.block_s)))


def plan_recompute(
    session: Session,
    *,
    batch_date: dt.date,
    source_path: str | None = None,
    model_version_id: int | None = None,
    rules: Sequence[EscalationRule] | None = None,
) -> list[RecomputeTarget]:
    """The scored calls of the batches on ``batch_date`` (from ``source_path``, with that
    model version, when given), each with its batch's settings and the rules to apply:
    ``rules`` when configured, else the operating point the batch's model version uses now
    (its site point once there is one, :mod:`etl.scoring.point_in_use`), as scoring resolves
    them (:func:`etl.scoring.escalation.resolve_operating_point`)."""
    rows = session.execute(text("""
        SELECT c.id, c.call_key, c.path, c.sha256, c.channel_roles, b.id AS batch_id,
               b.model_version_id, b.options
        FROM calls c
        JOIN batches b ON b.id = c.batch_id
        JOIN call_summaries s ON s.call_id = c.id AND s.model_version_id = b.model_version_id
        WHERE b.batch_date = :d AND c.status = 'scored'
          AND (CAST(:p AS text) IS NULL OR b.source_path = :p)
          AND (CAST(:m AS integer) IS NULL OR b.model_version_id = :m)
        ORDER BY b.id, c.call_key"""),
        {"d": batch_date, "p": source_path, "m": model_version_id}).mappings().all()
    points = {mv: resolve_operating_point(rules, calibration_in_use(session, mv))
              for mv in {row["model_version_id"] for row in rows}}
    targets = []
    for row in rows:
        point = points[row["model_version_id"]]
        targets.append(RecomputeTarget(
            call_id=row["id"], call_key=row["call_key"], path=row["path"],
            sha256=row["sha256"],
            roles={int(k): str(v) for k, v in (row["channel_roles"] or {}).items()},
            batch_id=row["batch_id"], model_version_id=row["model_version_id"],
            config=config_from_options(row["options"]), rules=point.rules,
            rules_source=point.source))
    return targets


def voice_activity(path: Path, *, roles: Mapping[int, str],
                   config: ScoringConfig) -> tuple[dict[str, list[Region]], dict[str, RoleEnergy],
                                                   float]:
    """``(speech regions per role, frame energies per role, duration s)`` of one recording:
    the first pass of :func:`etl.scoring.recording.score_recording` alone, so the regions are the ones
    the call was scored with."""
    info = read_info(path)
    if not roles or max(roles) >= info.channels:
        raise CallError(f"stored channel roles {roles} do not fit the file's {info.channels} "
                        "channel(s)")
    voice = voice_pass(path, roles=roles, channels=info.channels, sample_rate=info.sample_rate,
                       config=config)
    return voice.speech(), voice.energy(), voice.duration_s


def stored_segments(session: Session, *, call_id: int,
                    model_version_id: int) -> list[ScoredSegment]:
    """The call's scored segments as scoring produced them (sorted by start, then role)."""
    rows = session.execute(text("""
        SELECT role, start_s, end_s, emotion, confidence, is_negative, probabilities, abstained
        FROM call_segments WHERE call_id = :c AND model_version_id = :m
        ORDER BY start_s, role"""), {"c": call_id, "m": model_version_id}).all()
    return [ScoredSegment(role=r.role, start_s=r.start_s, end_s=r.end_s, emotion=r.emotion,
                          confidence=r.confidence, is_negative=r.is_negative,
                          probabilities=dict(r.probabilities or {}), abstained=r.abstained)
            for r in rows]


EVENT_COLUMNS = ("call_id", "model_version_id", "role", "kind", "start_s", "end_s", "value")


def copy_rows(session: Session, *, table: str, columns: Sequence[str],
              rows: Sequence[tuple[Any, ...]]) -> None:
    """COPY rows into ``table`` (one round trip per call); None is written as NULL."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerows(rows)
    buffer.seek(0)
    raw = session.connection().connection.dbapi_connection
    with raw.cursor() as cursor:  # type: ignore[union-attr]
        cursor.copy_expert(
            f"COPY {table} ({', '.join(columns)}) FROM STDIN WITH (FORMAT csv)", buffer)


def replace_events(session: Session, *, call_id: int, model_version_id: int,
                   events: Sequence[CallEvent]) -> None:
    """The call's ``call_events`` rows for this model version, replaced by ``events``."""
    session.execute(text("DELETE FROM call_events WHERE call_id = :c AND model_version_id = :m"),
                    {"c": call_id, "m": model_version_id})
    if events:
        copy_rows(session, table="call_events", columns=EVENT_COLUMNS, rows=[
            (call_id, model_version_id, e.role, e.kind, e.start_s, e.end_s, e.value)
            for e in events])


def write_summary(session: Session, *, call_id: int, model_version_id: int,
                  summary: SummaryStats, metrics: CallMetrics,
                  escalation: Escalation | None) -> None:
    """Insert or replace the call's ``call_summaries`` row for this model version."""
    values = {**summary.as_dict(), **metrics.as_dict(), "call_id": call_id,
              "model_version_id": model_version_id, "escalated": escalation is not None,
              "escalation_rule": escalation.rule if escalation else None,
              "escalation_reason": escalation.reason if escalation else None}
    stmt = pg_insert(CallSummary).values(**values)
    session.execute(stmt.on_conflict_do_update(
        index_elements=["call_id", "model_version_id"],
        set_={k: stmt.excluded[k] for k in values if k not in ("call_id", "model_version_id")}))


def recompute_call(session: Session, target: RecomputeTarget) -> Recomputed:
    """Recompute one call and rewrite its summary row and events (caller's transaction).

    Raises
    ------
    AudioError, CallError
        the recording is gone, unreadable or not the file that was scored.
    """
    path = Path(target.path)
    if not path.is_file():
        raise CallError(f"recording not found: {path}")
    if target.sha256 and sha256_file(path) != target.sha256:
        raise CallError("the recording changed since it was scored; score it again instead")
    speech, energy, duration = voice_activity(path, roles=target.roles, config=target.config)
    segments = stored_segments(session, call_id=target.call_id,
                               model_version_id=target.model_version_id)
    summary = summarise_call(segments, speech=speech, duration_s=duration,
                             streak_gap_s=target.config.streak_gap_s)
    metrics, events = compute_call_metrics(segments, speech=speech, energy=energy,
                                           duration_s=duration, config=target.config.metrics)
    escalation = evaluate(metric_values(summary, metrics), target.rules)
    _write(session, target, Recomputed(summary, metrics, events, escalation))
    return Recomputed(summary, metrics, events, escalation)


def _write(session: Session, target: RecomputeTarget, result: Recomputed) -> None:
    key = {"call_id": target.call_id, "model_version_id": target.model_version_id}
    write_summary(session, **key, summary=result.summary, metrics=result.metrics,
                  escalation=result.escalation)
    replace_events(session, **key, events=result.events)
    session.execute(text(
        "UPDATE calls SET extra = coalesce(extra, '{}'::jsonb) || "
        "jsonb_build_object('escalation_rules', CAST(:src AS text)) WHERE id = :c"),
        {"src": target.rules_source, "c": target.call_id})


def refresh_batch(session: Session, *, batch_id: int,
                  rules: Sequence[EscalationRule] | None) -> int:
    """Count the batch's escalations again and record the rules now behind them; returns the
    count."""
    stored: object = "model" if rules is None else rules_as_data(rules)
    return int(session.execute(text("""
        UPDATE batches b SET
            n_escalations = (SELECT count(*) FROM call_summaries s JOIN calls c ON c.id = s.call_id
                             WHERE c.batch_id = b.id AND s.model_version_id = b.model_version_id
                               AND s.escalated),
            options = coalesce(b.options, '{}'::jsonb)
                      || jsonb_build_object('rules', CAST(:rules AS jsonb))
        WHERE b.id = :b RETURNING n_escalations"""),
        {"b": batch_id, "rules": json.dumps(stored)}).scalar_one())


def run_recompute(
    transaction: Callable[[], AbstractContextManager[Session]],
    *,
    batch_date: dt.date,
    source_path: str | None = None,
    model_version_id: int | None = None,
    rules: Sequence[EscalationRule] | None = None,
    progress: bool = False,
) -> RecomputeReport:
    """Recompute every scored call of the batches on ``batch_date``, one ``transaction()``
    per call (so a failure or an interruption keeps what is done); a call that cannot be
    recomputed keeps its old row and is listed in ``failures`` with the reason."""
    with transaction() as session:
        targets = plan_recompute(session, batch_date=batch_date, source_path=source_path,
                                 model_version_id=model_version_id, rules=rules)
        before = {(r.call_id, r.model_version_id): r.escalation_rule for r in session.execute(
            text("SELECT call_id, model_version_id, escalation_rule FROM call_summaries "
                 "WHERE call_id = ANY(:ids)"), {"ids": [t.call_id for t in targets]})}
    report = RecomputeReport(batch_ids=sorted({t.batch_id for t in targets}),
                             n_calls=len(targets))
    iterator: Any = targets
    if progress:
        iterator = tqdm(targets, desc="recompute", unit="call")
    for target in iterator:
        try:
            with transaction() as session:
                result = recompute_call(session, target)
        except (AudioError, CallError, OSError) as exc:
            report.failures[target.call_key] = str(exc).splitlines()[0] if str(exc) else repr(exc)
            continue
        report.n_recomputed += 1
        rule = result.escalation.rule if result.escalation else None
        report.n_changed += rule != before.get((target.call_id, target.model_version_id))
    with transaction() as session:
        report.n_escalations = sum(refresh_batch(session, batch_id=b, rules=rules)
                                   for b in report.batch_ids)
        for batch_id in report.batch_ids:  # the rollups count escalations too
            refresh_rollup(session, batch_id=batch_id)
    return report
