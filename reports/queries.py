"""Everything the reports show, read in SQL into DataFrames (one query per table of facts).

Functions take ``session`` first and never write. Aggregation happens in PostgreSQL where it is
a GROUP BY; shaping for charts happens in ``reports.contexts``.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pandas as pd
from sqlalchemy import text
from sqlalchemy.orm import Session

from etl.corpora.labels import NEGATIVE_CLASSES


class ReportNotFoundError(ValueError):
    """The model version, batch date or call asked for does not exist."""


def _frame(session: Session, sql: str, **params: Any) -> pd.DataFrame:
    result = session.execute(text(sql), params)
    return pd.DataFrame(result.fetchall(), columns=list(result.keys()))


# --------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------


def resolve_model(session: Session, ref: str) -> int:
    """model_versions.id for an alias ("production"), an id ("12") or "name:version"."""
    ref = ref.strip()
    if ref.isdigit():
        row = session.execute(text("SELECT id FROM model_versions WHERE id = :id"),
                              {"id": int(ref)}).scalar()
    elif ":" in ref:
        name, _, version = ref.rpartition(":")
        row = session.execute(text(
            "SELECT mv.id FROM model_versions mv JOIN registered_models rm "
            "ON rm.id = mv.registered_model_id WHERE rm.name = :name AND mv.version = :v"),
            {"name": name, "v": int(version) if version.isdigit() else -1}).scalar()
    else:
        row = session.execute(text("SELECT model_version_id FROM model_aliases WHERE alias = :a"),
                              {"a": ref}).scalar()
    if row is None:
        known = session.execute(text(
            "SELECT string_agg(rm.name || ':' || mv.version || ' (id ' || mv.id || ')', ', ' "
            "ORDER BY mv.id) FROM model_versions mv "
            "JOIN registered_models rm ON rm.id = mv.registered_model_id")).scalar()
        raise ReportNotFoundError(
            f"no model version {ref!r}; use an id, NAME:VERSION or an alias. "
            f"Known: {known or 'none (train one with `ser train`)'}")
    return int(row)


def model_overview(session: Session, model_version_id: int) -> dict[str, Any]:
    df = _frame(session, """
        SELECT mv.id, rm.name, mv.version, mv.algorithm, mv.params, mv.label_scheme, mv.classes,
               mv.speaker_normalisation, cardinality(mv.training_clip_ids) AS n_clips,
               mv.training_set_sha256, mv.folds_sha256, mv.seed, mv.code_version, mv.cv_uar,
               mv.artifact_format, mv.artifact_sha256, octet_length(mv.artifact) AS artifact_bytes,
               mv.created_at, fs.name AS feature_set, fs.channel AS feature_channel,
               fs.version AS feature_version, cardinality(fs.feature_names) AS n_features,
               fs.feature_names,
               (SELECT coalesce(array_agg(alias ORDER BY alias), '{}') FROM model_aliases a
                 WHERE a.model_version_id = mv.id) AS aliases
        FROM model_versions mv
        JOIN registered_models rm ON rm.id = mv.registered_model_id
        JOIN feature_sets fs ON fs.id = mv.feature_set_id
        WHERE mv.id = :id""", id=model_version_id)
    if df.empty:
        raise ReportNotFoundError(f"no model version with id {model_version_id}")
    return df.iloc[0].to_dict()


def model_metrics(session: Session, model_version_id: int) -> pd.DataFrame:
    """All metric rows: fold (NaN = pooled), metric, class_label, group_name/value, value, extra."""
    return _frame(session, """
        SELECT fold, metric, class_label, group_name, group_value, value, extra
        FROM model_metrics WHERE model_version_id = :id ORDER BY metric, fold NULLS FIRST, id""",
                  id=model_version_id)


def training_clips(session: Session, model_version_id: int) -> pd.DataFrame:
    """The clips a model was trained on, with their class and actor demographics."""
    return _frame(session, """
        SELECT c.corpus, c.emotion, lsc.class_label, a.actor_code, a.sex, a.age, a.race,
               a.ethnicity, c.duration_s
        FROM model_versions mv
        CROSS JOIN LATERAL unnest(mv.training_clip_ids) AS t(clip_id)
        JOIN clips c ON c.id = t.clip_id
        LEFT JOIN actors a ON a.id = c.actor_id
        LEFT JOIN label_scheme_classes lsc
               ON lsc.scheme = mv.label_scheme AND lsc.emotion = c.emotion
        WHERE mv.id = :id""", id=model_version_id)


def alias_target(session: Session, alias: str = "production") -> int | None:
    value = session.execute(text("SELECT model_version_id FROM model_aliases WHERE alias = :a"),
                            {"a": alias}).scalar()
    return int(value) if value is not None else None


def model_versions(session: Session) -> pd.DataFrame:
    return _frame(session, """
        SELECT mv.id, rm.name, mv.version, mv.cv_uar, mv.label_scheme, mv.created_at,
               (SELECT coalesce(string_agg(alias, ', ' ORDER BY alias), '') FROM model_aliases a
                 WHERE a.model_version_id = mv.id) AS aliases
        FROM model_versions mv JOIN registered_models rm ON rm.id = mv.registered_model_id
        ORDER BY mv.id""")


# --------------------------------------------------------------------------------------------
# Batches
# --------------------------------------------------------------------------------------------


def batches_on(session: Session, batch_date: dt.date) -> pd.DataFrame:
    return _frame(session, """
        SELECT b.id, b.batch_date, b.source_path, b.status, b.started_at, b.finished_at,
               b.n_calls, b.n_scored, b.n_failed, b.n_escalations, b.audio_seconds,
               b.model_version_id, rm.name AS model_name, mv.version AS model_version, b.options
        FROM batches b
        JOIN model_versions mv ON mv.id = b.model_version_id
        JOIN registered_models rm ON rm.id = mv.registered_model_id
        WHERE b.batch_date = :d ORDER BY b.id""", d=batch_date)


def batch_dates(session: Session) -> list[dt.date]:
    rows = session.execute(text("SELECT DISTINCT batch_date FROM batches ORDER BY 1")).scalars()
    return list(rows)


def batch_calls(session: Session, batch_ids: list[int]) -> pd.DataFrame:
    """Every call of the batches with its summary under the batch's model (NULL if unscored)."""
    return _frame(session, """
        SELECT c.id, c.batch_id, c.call_key, c.path, c.agent_id, c.queue, c.started_at,
               coalesce(s.duration_s, c.duration_s) AS duration_s, c.status, c.error,
               s.talk_agent_s, s.talk_customer_s, s.silence_share, s.overtalk_share,
               s.negative_share_agent, s.negative_share_customer, s.longest_negative_streak_s,
               s.customer_negative_first_third, s.customer_negative_last_third, s.customer_trend,
               coalesce(s.escalated, false) AS escalated, s.escalation_rule, s.escalation_reason,
               s.model_version_id, s.customer_scored_share, s.customer_confidence_mean,
               s.customer_abstained_share
        FROM calls c
        JOIN batches b ON b.id = c.batch_id
        LEFT JOIN call_summaries s ON s.call_id = c.id AND s.model_version_id = b.model_version_id
        WHERE c.batch_id = ANY(:ids) ORDER BY c.id""", ids=batch_ids)


def batch_emotion_time(session: Session, batch_ids: list[int]) -> pd.DataFrame:
    """Seconds of speech per (role, predicted emotion) across the batches."""
    return _frame(session, """
        SELECT cs.role, cs.emotion, sum(cs.end_s - cs.start_s) AS seconds
        FROM call_segments cs
        JOIN calls c ON c.id = cs.call_id
        JOIN batches b ON b.id = c.batch_id AND b.model_version_id = cs.model_version_id
        WHERE c.batch_id = ANY(:ids)
        GROUP BY cs.role, cs.emotion ORDER BY cs.role, cs.emotion""", ids=batch_ids)


def segments_for_calls(session: Session, call_ids: list[int]) -> pd.DataFrame:
    """Segments of several calls under their batch's model (for the escalation sparklines)."""
    return _frame(session, """
        SELECT cs.call_id, cs.role, cs.start_s, cs.end_s, cs.emotion, cs.is_negative,
               cs.probabilities
        FROM call_segments cs
        JOIN calls c ON c.id = cs.call_id
        JOIN batches b ON b.id = c.batch_id AND b.model_version_id = cs.model_version_id
        WHERE cs.call_id = ANY(:ids) ORDER BY cs.call_id, cs.start_s""", ids=call_ids)


_DAILY = """
    SELECT b.batch_date AS day,
           count(c.id) AS calls,
           count(*) FILTER (WHERE c.status = 'scored') AS scored,
           count(*) FILTER (WHERE c.status = 'failed') AS failed,
           count(*) FILTER (WHERE s.escalated) AS escalations,
           sum(s.negative_share_customer * s.talk_customer_s) / nullif(sum(s.talk_customer_s)
               FILTER (WHERE s.negative_share_customer IS NOT NULL), 0) AS customer_negative,
           sum(s.negative_share_agent * s.talk_agent_s) / nullif(sum(s.talk_agent_s)
               FILTER (WHERE s.negative_share_agent IS NOT NULL), 0) AS agent_negative,
           avg(s.duration_s) AS mean_duration_s,
           avg(s.overtalk_share) AS overtalk_share,
           coalesce(sum(s.negative_share_customer * s.talk_customer_s), 0) AS customer_negative_s,
           coalesce(sum(s.talk_customer_s) FILTER (WHERE s.negative_share_customer IS NOT NULL), 0)
               AS customer_talk_s
    FROM batches b
    JOIN calls c ON c.batch_id = b.id
    LEFT JOIN call_summaries s ON s.call_id = c.id AND s.model_version_id = b.model_version_id
    WHERE b.batch_date BETWEEN :start AND :end
"""


def daily_trends(session: Session, start: dt.date, end: dt.date) -> pd.DataFrame:
    """One row per night in [start, end]: volumes, escalations and talk-weighted negative shares."""
    return _frame(session, _DAILY + " GROUP BY b.batch_date ORDER BY b.batch_date",
                  start=start, end=end)


def group_trends(session: Session, start: dt.date, end: dt.date, *, by: str) -> pd.DataFrame:
    """Per night and queue (``by="queue"``) or agent (``by="agent_id"``)."""
    if by not in ("queue", "agent_id"):
        raise ValueError(f"group_trends by must be 'queue' or 'agent_id', not {by!r}")
    sql = _DAILY.replace("SELECT b.batch_date AS day,", f"SELECT b.batch_date AS day, "
                                                        f"c.{by} AS grp,")
    return _frame(session, sql + f" AND c.{by} IS NOT NULL GROUP BY b.batch_date, c.{by} "
                  "ORDER BY 1, 2", start=start, end=end)


# --------------------------------------------------------------------------------------------
# Calls
# --------------------------------------------------------------------------------------------


def call_detail(session: Session, call_id: int) -> dict[str, Any]:
    df = _frame(session, """
        SELECT c.id, c.call_key, c.path, c.agent_id, c.queue, c.started_at, c.channel_roles,
               c.sample_rate, c.channels, coalesce(s.duration_s, c.duration_s) AS duration_s,
               c.status, c.error, c.extra, b.id AS batch_id, b.batch_date, b.model_version_id,
               b.options AS batch_options,
               rm.name AS model_name, mv.version AS model_version, mv.classes, mv.label_scheme,
               s.talk_agent_s, s.talk_customer_s, s.silence_share, s.overtalk_share,
               s.negative_share_agent, s.negative_share_customer, s.longest_negative_streak_s,
               s.customer_negative_first_third, s.customer_negative_last_third, s.customer_trend,
               s.emotion_mix, coalesce(s.escalated, false) AS escalated, s.escalation_rule,
               s.escalation_reason, s.customer_scored_share, s.customer_confidence_mean,
               s.customer_abstained_share, s.negative_share_agent_q1, s.negative_share_agent_q2,
               s.negative_share_agent_q3, s.negative_share_agent_q4,
               s.negative_share_customer_q1, s.negative_share_customer_q2,
               s.negative_share_customer_q3, s.negative_share_customer_q4,
               s.interruptions_by_agent, s.interruptions_by_customer, s.interruption_overlap_s,
               s.long_silence_count, s.long_silence_s, s.long_silence_longest_s
        FROM calls c
        JOIN batches b ON b.id = c.batch_id
        JOIN model_versions mv ON mv.id = b.model_version_id
        JOIN registered_models rm ON rm.id = mv.registered_model_id
        LEFT JOIN call_summaries s ON s.call_id = c.id AND s.model_version_id = b.model_version_id
        WHERE c.id = :id""", id=call_id)
    if df.empty:
        raise ReportNotFoundError(f"no call with id {call_id}")
    return df.iloc[0].to_dict()


def resolve_call(session: Session, ref: str) -> int:
    """calls.id for an id or a call key (the newest batch's call with that key)."""
    if ref.isdigit():
        found = session.execute(text("SELECT id FROM calls WHERE id = :id"), {"id": int(ref)}).scalar()
    else:
        found = session.execute(text(
            "SELECT c.id FROM calls c JOIN batches b ON b.id = c.batch_id WHERE c.call_key = :k "
            "ORDER BY b.batch_date DESC, c.id DESC LIMIT 1"), {"k": ref}).scalar()
    if found is None:
        raise ReportNotFoundError(f"no call {ref!r}; give a calls.id or a call key")
    return int(found)


def call_segments(session: Session, call_id: int, model_version_id: int) -> pd.DataFrame:
    return _frame(session, """
        SELECT role, start_s, end_s, emotion, confidence, is_negative, probabilities, abstained
        FROM call_segments WHERE call_id = :id AND model_version_id = :mv
        ORDER BY start_s, role""", id=call_id, mv=model_version_id)


def call_events(session: Session, call_id: int, model_version_id: int, *,
                kinds: tuple[str, ...] = ("interruption", "silence")) -> pd.DataFrame:
    """The call's event rows of ``kinds`` (empty for calls scored before events existed)."""
    return _frame(session, """
        SELECT role, kind, start_s, end_s, value FROM call_events
        WHERE call_id = :id AND model_version_id = :mv AND kind = ANY(:kinds)
        ORDER BY start_s, kind""", id=call_id, mv=model_version_id, kinds=list(kinds))


def agent_conversation(session: Session, batch_ids: list[int]) -> pd.DataFrame:
    """Per agent over the batches' scored calls that have conversation metrics: interruptions
    by the agent, dead air (long silences), and the customer negative share beside them."""
    return _frame(session, """
        SELECT c.agent_id, count(*) AS calls,
               sum(s.interruptions_by_agent) AS agent_interruptions,
               sum(s.interruptions_by_customer) AS customer_interruptions,
               sum(s.interruptions_by_agent) * 3600.0 / nullif(sum(s.talk_agent_s), 0)
                   AS agent_interruptions_per_talk_hour,
               sum(s.long_silence_s) AS dead_air_s,
               sum(s.long_silence_count) AS long_silences,
               max(s.long_silence_longest_s) AS longest_silence_s,
               sum(s.negative_share_customer * s.talk_customer_s) / nullif(sum(s.talk_customer_s)
                   FILTER (WHERE s.negative_share_customer IS NOT NULL), 0) AS customer_negative,
               avg(s.escalated::int) AS escalation_rate
        FROM calls c
        JOIN batches b ON b.id = c.batch_id
        JOIN call_summaries s ON s.call_id = c.id AND s.model_version_id = b.model_version_id
        WHERE c.batch_id = ANY(:ids) AND c.status = 'scored' AND c.agent_id IS NOT NULL
          AND s.interruptions_by_agent IS NOT NULL
        GROUP BY c.agent_id ORDER BY c.agent_id""", ids=batch_ids)


def negative_classes(session: Session, label_scheme: str) -> set[str]:
    rows = session.execute(text(
        "SELECT class_label FROM label_scheme_classes WHERE scheme = :s AND is_negative"),
        {"s": label_scheme}).scalars()
    found = set(rows)
    if not found:
        found = set(NEGATIVE_CLASSES)
    return found
