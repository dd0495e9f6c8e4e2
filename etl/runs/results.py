"""What a scoring run writes: each claimed call's outcome, and the batch's counts at the end.

Every write that finishes a claimed call goes through :func:`finish_claim`, one guarded
``UPDATE``: it moves the call out of ``claimed`` only while ``worker`` still holds the claim, so a
worker whose claim was taken over meanwhile (its lease died, another run scored the call) writes
nothing. The outcomes are

- scored (:func:`write_result`): the call's row, then its segments, events and summary;
- failed (:func:`mark_failed`): the reason it could not be scored; ``--retry-failed`` tries it
  again;
- rejected (:func:`mark_rejected`): failed for good, because its file resolves outside the batch
  folder and must not be opened (``extra.rejected``, see :mod:`etl.runs.claims`).

:func:`write_outcome` picks one of them for a runner; :func:`finalise_batch` counts the calls
into the batch row. Nothing here commits: the runners own the transactions (one per result
locally, a few results per transaction on a Dask cluster).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from db.models import Batch, Call
from etl.runs.outcomes import CallStatus
from etl.scoring.recompute import copy_rows, replace_events, write_summary
from etl.scoring.recording import CallResult
from etl.scoring.rollup import refresh_rollup

SEGMENT_COLUMNS = ("call_id", "model_version_id", "role", "start_s", "end_s", "emotion",
                   "confidence", "is_negative", "probabilities", "abstained")


def finish_claim(session: Session, *, call_id: int, worker: str,
                 values: Mapping[str, Any]) -> bool:
    """Set ``values`` on the call ``worker`` has claimed; False (nothing written) if the claim
    was taken over meanwhile. ``extra`` is merged into what registration stored (the manifest's
    line and columns)."""
    assignments = ", ".join(
        "extra = coalesce(extra, '{}'::jsonb) || CAST(:extra AS jsonb)" if k == "extra"
        else f"{k} = :{k}" for k in values)
    result = session.execute(text(
        f"UPDATE calls SET {assignments} WHERE id = :id AND status = 'claimed' "
        "AND claimed_by = :worker"), {**values, "id": call_id, "worker": worker})
    return result.rowcount == 1  # type: ignore[attr-defined]


def mark_failed(session: Session, *, call_id: int, worker: str, reason: str) -> bool:
    """Record why the call could not be scored (the batch goes on)."""
    return finish_claim(session, call_id=call_id, worker=worker,
                        values={"status": "failed", "error": reason[:2000]})


def mark_rejected(session: Session, *, call_id: int, worker: str, reason: str) -> bool:
    """Fail the call for a reason that must not be retried (its file is outside the batch
    folder): :func:`mark_failed` plus ``extra.rejected``, which no claim ever takes again."""
    return finish_claim(session, call_id=call_id, worker=worker, values={
        "status": "failed", "error": reason[:2000], "extra": json.dumps({"rejected": True})})


def write_result(session: Session, *, call_id: int, worker: str, model_version_id: int,
                 result: CallResult) -> bool:
    """The scored call's row, segments, events and summary in the caller's transaction.

    Returns False (writing nothing) if ``worker`` no longer holds the claim.
    """
    extra = {"bandwidth": result.bandwidth, "warnings": result.warnings,
             "roles": {str(k): v for k, v in result.roles.items()},
             "talk_s": {role: round(sum(e - s for s, e in regs), 3)
                        for role, regs in result.speech.items()},
             "seconds": {k: round(v, 4) for k, v in result.seconds.items()},
             "escalation_rules": result.rules_source,
             "confidence_floor": result.confidence_floor}
    owned = finish_claim(session, call_id=call_id, worker=worker, values={
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
        copy_rows(session, table="call_segments", columns=SEGMENT_COLUMNS, rows=[
            (call_id, model_version_id, s.role, s.start_s, s.end_s, s.emotion, s.confidence,
             "t" if s.is_negative else "f", json.dumps(dict(s.probabilities)),
             "t" if s.abstained else "f")
            for s in result.segments])
    replace_events(session, call_id=call_id, model_version_id=model_version_id,
                   events=result.events)
    write_summary(session, call_id=call_id, model_version_id=model_version_id,
                  summary=result.summary, metrics=result.metrics, escalation=result.escalation)
    return True


def write_outcome(session: Session, *, call_id: int, worker: str, model_version_id: int,
                  status: CallStatus, reason: str = "", result: CallResult | None = None) -> bool:
    """Write the claimed call's outcome in the caller's transaction: a scored call's
    ``result``, or the ``reason`` a call failed (or was rejected).

    Returns False (writing nothing) if ``worker`` no longer holds the claim.
    """
    if status == "scored":
        assert result is not None
        return write_result(session, call_id=call_id, worker=worker,
                            model_version_id=model_version_id, result=result)
    if status == "rejected":
        return mark_rejected(session, call_id=call_id, worker=worker, reason=reason)
    return mark_failed(session, call_id=call_id, worker=worker, reason=reason)


@dataclass(frozen=True, slots=True)
class BatchReport:
    """A batch's counts as :func:`finalise_batch` stored them, and its failures by call key."""

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
    refresh_rollup(session, batch_id=batch_id)
    batch = session.get(Batch, batch_id)
    assert batch is not None
    failures = dict(session.execute(select(Call.call_key, Call.error).where(
        Call.batch_id == batch_id, Call.status == "failed").order_by(Call.call_key)).all())
    return BatchReport(batch_id, batch.batch_date, batch.source_path, batch.model_version_id,
                       counts.n_calls, counts.n_scored, counts.n_failed, counts.n_pending,
                       counts.n_escalations, float(counts.audio_seconds), wall_seconds,
                       {k: v or "" for k, v in failures.items()})
