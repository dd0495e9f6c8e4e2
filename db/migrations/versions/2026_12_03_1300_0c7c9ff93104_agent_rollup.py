"""agent rollup: daily_agent_rollup and analytics.agent_daily

Per day (``calls.call_date``), queue, agent and model version: the scored calls, escalated
calls, calls with scored customer speech, their escalations and the sum of their customer
negative shares, from the summaries of the batch's model version (what ``analytics.calls``
shows). ``etl.scoring.rollup.refresh_rollup`` rewrites a batch's days with the emotion rollup.
``analytics.agent_daily`` reads it and is granted to ``ser_analyst`` like the other views.
Upgrade fills the table from the rows present; downgrade drops both.

Revision ID: 0c7c9ff93104
Revises: 819c813532a8
Create Date: 2026-12-03 13:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0c7c9ff93104"
down_revision: str | None = "819c813532a8"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ROLE = "ser_analyst"

# As etl.scoring.rollup.refresh_rollup, for every day at once (kept here so the migration stays
# fixed).
FILL = """
INSERT INTO public.daily_agent_rollup (call_date, queue, agent_id, model_version_id, calls,
                                       escalated_calls, customer_calls, escalated_customer_calls,
                                       customer_negative_sum, duration_s)
SELECT c.call_date, c.queue, c.agent_id, s.model_version_id, count(*),
       count(*) FILTER (WHERE s.escalated),
       count(s.negative_share_customer),
       count(s.negative_share_customer) FILTER (WHERE s.escalated),
       COALESCE(sum(s.negative_share_customer), 0), sum(s.duration_s)
FROM public.calls c
JOIN public.batches b         ON b.id = c.batch_id
JOIN public.call_summaries s  ON s.call_id = c.id AND s.model_version_id = b.model_version_id
WHERE c.status = 'scored'
GROUP BY c.call_date, c.queue, c.agent_id, s.model_version_id
"""

AGENT_DAILY = """
CREATE VIEW analytics.agent_daily AS
SELECT r.call_date                 AS day,
       r.queue,
       r.agent_id,
       r.model_version_id,
       r.calls,
       r.escalated_calls,
       r.customer_calls,
       r.escalated_customer_calls,
       r.customer_negative_sum,
       r.duration_s
FROM public.daily_agent_rollup r
"""

# As in 5e7a0c1d2b3f: the role is cluster-wide and may be missing (a migrating user without
# CREATEROLE); the view is created either way.
GRANT = f"""
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{ROLE}') THEN
        GRANT SELECT ON analytics.agent_daily TO {ROLE};
    END IF;
END
$$
"""


def upgrade() -> None:
    op.create_table(
        "daily_agent_rollup",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("call_date", sa.Date(), nullable=False),
        sa.Column("queue", sa.String(length=64), nullable=True),
        sa.Column("agent_id", sa.String(length=64), nullable=True),
        sa.Column("model_version_id", sa.Integer(), nullable=False),
        sa.Column("calls", sa.BigInteger(), nullable=False),
        sa.Column("escalated_calls", sa.BigInteger(), nullable=False),
        sa.Column("customer_calls", sa.BigInteger(), nullable=False),
        sa.Column("escalated_customer_calls", sa.BigInteger(), nullable=False),
        sa.Column("customer_negative_sum", sa.Float(), nullable=False),
        sa.Column("duration_s", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(
            ["model_version_id"], ["model_versions.id"],
            name=op.f("fk_daily_agent_rollup_model_version_id_model_versions")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_daily_agent_rollup")),
    )
    op.create_index(op.f("ix_daily_agent_rollup_call_date"), "daily_agent_rollup",
                    ["call_date"], unique=False)
    op.execute(FILL)
    op.execute(AGENT_DAILY)
    op.execute("COMMENT ON VIEW analytics.agent_daily IS 'Scored calls per day, queue, agent and "
               "model version with the sums behind agent averages (customer_negative_sum / "
               "customer_calls); rewritten with each batch.'")
    op.execute(GRANT)


def downgrade() -> None:
    op.execute("DROP VIEW IF EXISTS analytics.agent_daily")
    op.drop_index(op.f("ix_daily_agent_rollup_call_date"), table_name="daily_agent_rollup")
    op.drop_table("daily_agent_rollup")
