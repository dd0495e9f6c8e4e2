"""call metrics: conversation metrics per call and the call_events table

Revision ID: aad6ca938054
Revises: b3a7e2c9d5f4
Create Date: 2026-12-03 10:00:00+00:00

``call_summaries`` gains typed, nullable columns for the conversation metrics of
``etl/scoring/call_metrics.py`` (negative share per role and quarter, turns, agent response latency,
interruptions, long silences, loudness and its change, speaking rate); ``call_events`` holds
the turns, interruptions and long silences as rows. ``analytics.calls`` gets the new columns
appended (``CREATE OR REPLACE VIEW`` keeps the existing columns, their order and the grants);
the new ``analytics.call_events`` view is granted to ``ser_analyst`` like the others. Downgrade
drops the view, the table and the columns and restores the views of revision 9d2f6b1c4e81.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from db.migrations.earlier import revision_module

revision: str = "aad6ca938054"
down_revision: str | None = "b3a7e2c9d5f4"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ROLE = "ser_analyst"
INTEGER_COLUMNS = frozenset({"turns_agent", "turns_customer", "interruptions_by_agent",
                             "interruptions_by_customer", "long_silence_count"})
SUMMARY_COLUMNS = (
    "negative_share_agent_q1", "negative_share_agent_q2", "negative_share_agent_q3",
    "negative_share_agent_q4", "negative_share_customer_q1", "negative_share_customer_q2",
    "negative_share_customer_q3", "negative_share_customer_q4",
    "turns_agent", "turns_customer", "turn_mean_agent_s", "turn_mean_customer_s",
    "turn_longest_agent_s", "turn_longest_customer_s", "agent_response_latency_s",
    "interruptions_by_agent", "interruptions_by_customer", "interruption_overlap_s",
    "long_silence_count", "long_silence_s", "long_silence_longest_s",
    "loudness_agent_dbfs", "loudness_customer_dbfs", "loudness_change_agent_db",
    "loudness_change_customer_db", "speaking_rate_agent", "speaking_rate_customer",
)

_NEW_CALL_COLUMNS = "".join(f",\n       s.{name}" for name in SUMMARY_COLUMNS)

CALLS = f"""
CREATE OR REPLACE VIEW analytics.calls AS
SELECT c.id                                       AS call_id,
       c.call_key,
       b.id                                       AS batch_id,
       b.batch_date,
       COALESCE(c.started_at::date, b.batch_date) AS call_date,
       c.started_at,
       c.agent_id,
       c.queue,
       c.status,
       c.error,
       c.sample_rate,
       c.channels,
       c.extra ->> 'bandwidth'                    AS bandwidth,
       c.extra -> 'warnings'                      AS warnings,
       b.model_version_id,
       rm.name                                    AS model_name,
       mv.version                                 AS model_version,
       COALESCE(s.duration_s, c.duration_s)       AS duration_s,
       s.talk_agent_s,
       s.talk_customer_s,
       s.silence_share,
       s.overtalk_share,
       s.negative_share_agent,
       s.negative_share_customer,
       s.longest_negative_streak_s,
       s.customer_negative_first_third,
       s.customer_negative_last_third,
       s.customer_trend,
       s.emotion_mix,
       COALESCE(s.escalated, false)               AS escalated,
       s.escalation_rule,
       s.escalation_reason,
       s.customer_scored_share,
       s.customer_confidence_mean,
       s.customer_abstained_share,
       (c.extra ->> 'confidence_floor')::double precision AS confidence_floor,
       c.extra ->> 'escalation_rules'             AS escalation_rules_source{_NEW_CALL_COLUMNS}
FROM public.calls c
JOIN public.batches b            ON b.id = c.batch_id
JOIN public.model_versions mv    ON mv.id = b.model_version_id
JOIN public.registered_models rm ON rm.id = mv.registered_model_id
LEFT JOIN public.call_summaries s
       ON s.call_id = c.id AND s.model_version_id = b.model_version_id
"""

CALL_EVENTS = """
CREATE VIEW analytics.call_events AS
SELECT e.id                                       AS event_id,
       e.call_id,
       c.call_key,
       b.batch_date,
       COALESCE(c.started_at::date, b.batch_date) AS call_date,
       c.agent_id,
       c.queue,
       e.role,
       e.kind,
       e.start_s,
       e.end_s,
       e.end_s - e.start_s                        AS duration_s,
       e.value,
       e.model_version_id,
       rm.name                                    AS model_name,
       mv.version                                 AS model_version
FROM public.call_events e
JOIN public.calls c              ON c.id = e.call_id
JOIN public.batches b            ON b.id = c.batch_id
JOIN public.model_versions mv    ON mv.id = e.model_version_id
JOIN public.registered_models rm ON rm.id = mv.registered_model_id
"""

# As in 5e7a0c1d2b3f: the role is cluster-wide and may be missing (a migrating user without
# CREATEROLE); the view is created either way.
GRANT_EVENTS = f"""
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{ROLE}') THEN
        GRANT SELECT ON analytics.call_events TO {ROLE};
    END IF;
END
$$
"""


_revision = revision_module


def upgrade() -> None:
    for name in SUMMARY_COLUMNS:
        kind = sa.Integer() if name in INTEGER_COLUMNS else sa.Float()
        op.add_column("call_summaries", sa.Column(name, kind, nullable=True))
    op.create_table(
        "call_events",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("call_id", sa.Integer(), nullable=False),
        sa.Column("model_version_id", sa.Integer(), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=True),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("start_s", sa.Float(), nullable=False),
        sa.Column("end_s", sa.Float(), nullable=False),
        sa.Column("value", sa.Float(), nullable=True),
        sa.CheckConstraint("kind IN ('turn', 'interruption', 'silence')",
                           name=op.f("ck_call_events_kind_valid")),
        sa.ForeignKeyConstraint(["call_id"], ["calls.id"],
                                name=op.f("fk_call_events_call_id_calls"), ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["model_version_id"], ["model_versions.id"],
                                name=op.f("fk_call_events_model_version_id_model_versions")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_call_events")),
    )
    op.create_index("ix_call_events_call_id_model_version_id", "call_events",
                    ["call_id", "model_version_id"], unique=False)
    op.execute(CALLS)
    op.execute(CALL_EVENTS)
    op.execute("COMMENT ON VIEW analytics.call_events IS "
               "'Turns, interruptions and long silences of scored calls, per model version'")
    op.execute(GRANT_EVENTS)


def downgrade() -> None:
    previous = _revision("9d2f6b1c4e81")
    op.execute("DROP VIEW IF EXISTS analytics.call_events")
    # a view loses columns only by being dropped; escalations reads from calls
    op.execute("DROP VIEW IF EXISTS analytics.escalations")
    op.execute("DROP VIEW IF EXISTS analytics.calls")
    op.execute(previous.CALLS)
    op.execute(previous.ESCALATIONS)
    op.execute("COMMENT ON VIEW analytics.calls IS "
               "'One row per call and model version: status, summary numbers, escalation'")
    op.execute("COMMENT ON VIEW analytics.escalations IS 'Escalated calls and the rule that fired'")
    op.execute(_revision("5e7a0c1d2b3f").CREATE_ROLE)  # the grants went with the dropped views
    op.drop_index("ix_call_events_call_id_model_version_id", table_name="call_events")
    op.drop_table("call_events")
    for name in reversed(SUMMARY_COLUMNS):
        op.drop_column("call_summaries", name)
