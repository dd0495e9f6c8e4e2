"""trustworthy scores: abstained segments, scored coverage and confidence

Revision ID: 9d2f6b1c4e81
Revises: 7c1e5a9d3f20
Create Date: 2026-12-02 17:00:00+00:00

``call_segments.abstained`` marks windows below the model's confidence floor (kept, but neither
negative nor counted in the summary numbers); ``call_summaries`` gains how much of the customer's
speech was scored, with what mean confidence, and the abstained share. The analytics views get
the new columns appended (``CREATE OR REPLACE VIEW`` keeps the existing columns, their order and
the grants to ``ser_analyst``; columns are never renamed or removed). Downgrade drops the columns
and restores the views of revision 5e7a0c1d2b3f.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

import sqlalchemy as sa
from alembic import op

revision: str = "9d2f6b1c4e81"
down_revision: str | None = "7c1e5a9d3f20"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SUMMARY_COLUMNS = ("customer_scored_share", "customer_confidence_mean", "customer_abstained_share")

CALLS = """
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
       c.extra ->> 'escalation_rules'             AS escalation_rules_source
FROM public.calls c
JOIN public.batches b            ON b.id = c.batch_id
JOIN public.model_versions mv    ON mv.id = b.model_version_id
JOIN public.registered_models rm ON rm.id = mv.registered_model_id
LEFT JOIN public.call_summaries s
       ON s.call_id = c.id AND s.model_version_id = b.model_version_id
"""

SEGMENTS = """
CREATE OR REPLACE VIEW analytics.segments AS
SELECT seg.id                                     AS segment_id,
       seg.call_id,
       c.call_key,
       b.batch_date,
       COALESCE(c.started_at::date, b.batch_date) AS call_date,
       c.agent_id,
       c.queue,
       seg.role,
       seg.start_s,
       seg.end_s,
       seg.end_s - seg.start_s                    AS duration_s,
       seg.emotion,
       seg.confidence,
       seg.is_negative,
       seg.probabilities,
       seg.model_version_id,
       rm.name                                    AS model_name,
       mv.version                                 AS model_version,
       seg.abstained
FROM public.call_segments seg
JOIN public.calls c              ON c.id = seg.call_id
JOIN public.batches b            ON b.id = c.batch_id
JOIN public.model_versions mv    ON mv.id = seg.model_version_id
JOIN public.registered_models rm ON rm.id = mv.registered_model_id
"""

DAILY_TRENDS = """
CREATE OR REPLACE VIEW analytics.daily_trends AS
SELECT call_date                                  AS day,
       queue,
       agent_id,
       role,
       emotion,
       model_version_id,
       count(DISTINCT call_id)                    AS calls,
       count(*)                                   AS segments,
       sum(duration_s)                            AS speech_s,
       sum(duration_s) / NULLIF(sum(sum(duration_s)) OVER (
           PARTITION BY call_date, queue, agent_id, role, model_version_id), 0) AS share,
       COALESCE(sum(duration_s) FILTER (WHERE abstained), 0) AS abstained_s
FROM analytics.segments
GROUP BY call_date, queue, agent_id, role, emotion, model_version_id
"""

ESCALATIONS = """
CREATE OR REPLACE VIEW analytics.escalations AS
SELECT call_id,
       call_key,
       batch_date,
       call_date,
       started_at,
       agent_id,
       queue,
       model_version_id,
       model_name,
       model_version,
       escalation_rule,
       escalation_reason,
       negative_share_customer,
       longest_negative_streak_s,
       customer_trend,
       overtalk_share,
       duration_s,
       customer_scored_share,
       customer_confidence_mean,
       customer_abstained_share
FROM analytics.calls
WHERE escalated
"""


def _views_revision() -> ModuleType:
    """The migration that created the analytics views (its DDL is the downgrade target)."""
    path = next(Path(__file__).parent.glob("*_5e7a0c1d2b3f_analytics_views.py"))
    spec = importlib.util.spec_from_file_location("_ser_analytics_views_5e7a0c1d2b3f", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def upgrade() -> None:
    op.add_column("call_segments", sa.Column("abstained", sa.Boolean(),
                                             server_default="false", nullable=False))
    for name in SUMMARY_COLUMNS:
        op.add_column("call_summaries", sa.Column(name, sa.Float(), nullable=True))
    for ddl in (CALLS, SEGMENTS, DAILY_TRENDS, ESCALATIONS):
        op.execute(ddl)


def downgrade() -> None:
    views = _views_revision()
    for view in reversed(views.VIEWS):
        op.execute(f"DROP VIEW IF EXISTS analytics.{view}")
    for name in reversed(SUMMARY_COLUMNS):
        op.drop_column("call_summaries", name)
    op.drop_column("call_segments", "abstained")
    for ddl in (views.CALLS, views.SEGMENTS, views.DAILY_TRENDS, views.ESCALATIONS):
        op.execute(ddl)
    op.execute(views.CREATE_ROLE)
