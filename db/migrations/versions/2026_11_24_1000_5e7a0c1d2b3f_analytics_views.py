"""analytics schema: stable views for analysts and the read-only role ser_analyst

Revision ID: 5e7a0c1d2b3f
Revises: 28827b43b400
Create Date: 2026-11-24 10:00:00+00:00

Hand-written (views and roles are outside autogenerate). The views are the analyst contract:
columns may be added, never renamed or removed without a new view name.

``ser_analyst`` is a cluster-wide NOLOGIN role (grant it to real logins: ``GRANT ser_analyst TO
alice``). It can read the four views and nothing else: the views run with their owner's rights,
so the role needs no access to the tables underneath (and gets none; actors' demographics and
raw paths stay out of reach). Several databases on one server share the role, so upgrade creates
it only if missing (tolerating a concurrent creator) and downgrade only revokes this database's
grants; it never drops the role.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "5e7a0c1d2b3f"
down_revision: str | None = "28827b43b400"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ROLE = "ser_analyst"
VIEWS = ("calls", "segments", "daily_trends", "escalations")

CALLS = """
CREATE VIEW analytics.calls AS
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
       s.escalation_reason
FROM public.calls c
JOIN public.batches b            ON b.id = c.batch_id
JOIN public.model_versions mv    ON mv.id = b.model_version_id
JOIN public.registered_models rm ON rm.id = mv.registered_model_id
LEFT JOIN public.call_summaries s
       ON s.call_id = c.id AND s.model_version_id = b.model_version_id
"""

SEGMENTS = """
CREATE VIEW analytics.segments AS
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
       mv.version                                 AS model_version
FROM public.call_segments seg
JOIN public.calls c              ON c.id = seg.call_id
JOIN public.batches b            ON b.id = c.batch_id
JOIN public.model_versions mv    ON mv.id = seg.model_version_id
JOIN public.registered_models rm ON rm.id = mv.registered_model_id
"""

DAILY_TRENDS = """
CREATE VIEW analytics.daily_trends AS
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
           PARTITION BY call_date, queue, agent_id, role, model_version_id), 0) AS share
FROM analytics.segments
GROUP BY call_date, queue, agent_id, role, emotion, model_version_id
"""

ESCALATIONS = """
CREATE VIEW analytics.escalations AS
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
       duration_s
FROM analytics.calls
WHERE escalated
"""

# Roles are cluster-wide: another database's migration may create it at the same moment, and
# a migrating user without CREATEROLE should still get the views (with a notice).
CREATE_ROLE = f"""
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{ROLE}') THEN
        BEGIN
            CREATE ROLE {ROLE} NOLOGIN;
        EXCEPTION
            WHEN duplicate_object OR unique_violation THEN NULL;
            WHEN insufficient_privilege THEN
                RAISE NOTICE 'no privilege to create role {ROLE}; analytics views created without it';
        END;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{ROLE}') THEN
        GRANT USAGE ON SCHEMA analytics TO {ROLE};
        GRANT SELECT ON {", ".join(f"analytics.{v}" for v in VIEWS)} TO {ROLE};
    END IF;
END
$$
"""

REVOKE_ROLE = f"""
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{ROLE}') THEN
        REVOKE ALL ON ALL TABLES IN SCHEMA analytics FROM {ROLE};
        REVOKE ALL ON SCHEMA analytics FROM {ROLE};
    END IF;
END
$$
"""


def upgrade() -> None:
    op.execute("CREATE SCHEMA IF NOT EXISTS analytics")
    for ddl in (CALLS, SEGMENTS, DAILY_TRENDS, ESCALATIONS):
        op.execute(ddl)
    op.execute("COMMENT ON SCHEMA analytics IS 'Stable read-only views for analysts (ser_analyst)'")
    op.execute("COMMENT ON VIEW analytics.calls IS "
               "'One row per call and model version: status, summary numbers, escalation'")
    op.execute("COMMENT ON VIEW analytics.segments IS "
               "'Scored speech segments: role, time span, emotion, probabilities, model version'")
    op.execute("COMMENT ON VIEW analytics.daily_trends IS "
               "'Speech time per day, queue, agent, role and emotion, with its share'")
    op.execute("COMMENT ON VIEW analytics.escalations IS 'Escalated calls and the rule that fired'")
    op.execute(CREATE_ROLE)


def downgrade() -> None:
    # Revoke this database's grants only; the role may serve other databases on the server.
    op.execute(REVOKE_ROLE)
    for view in reversed(VIEWS):
        op.execute(f"DROP VIEW IF EXISTS analytics.{view}")
    op.execute("DROP SCHEMA IF EXISTS analytics")
