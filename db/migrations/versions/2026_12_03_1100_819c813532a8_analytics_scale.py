"""analytics at scale: a stored call_date and a daily emotion rollup

Revision ID: 819c813532a8
Revises: aad6ca938054
Create Date: 2026-12-03 11:00:00+00:00

``calls.call_date`` is the day a call belongs to, stored once when the call row is written
(trigger ``calls_call_date``: the UTC date of ``started_at``, else the batch date) and indexed,
so a date filter on the analytics views reads only its window and no longer depends on the
session's ``TimeZone``. ``daily_emotion_rollup`` holds speech time per day, queue, agent, role,
emotion and model version; ``etl.scoring.rollup.refresh_rollup`` rewrites the days of a batch when it is
finalised (same transaction), and ``analytics.daily_trends`` reads it instead of aggregating
every segment at query time. The views keep their names, columns, types, order and grants
(``CREATE OR REPLACE VIEW``). Upgrade fills ``call_date`` and the rollup from the rows present;
downgrade drops both and restores the views of revisions 9d2f6b1c4e81 and aad6ca938054.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from db.migrations.earlier import revision_module

revision: str = "819c813532a8"
down_revision: str | None = "aad6ca938054"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OLD_CALL_DATE = "COALESCE(c.started_at::date, b.batch_date) AS call_date"
NEW_CALL_DATE = "c.call_date                                AS call_date"

# The one definition of the day a call belongs to. UTC is fixed here (not the session's
# TimeZone) so every client and the nightly flow agree; calls.csv times without a zone are UTC.
CALL_DATE_FUNCTION = """
CREATE OR REPLACE FUNCTION public.ser_call_date() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' AND NEW.call_date IS NOT NULL THEN
        RETURN NEW;
    END IF;
    NEW.call_date := COALESCE((NEW.started_at AT TIME ZONE 'UTC')::date,
                              (SELECT b.batch_date FROM public.batches b
                               WHERE b.id = NEW.batch_id));
    RETURN NEW;
END
$$
"""

CALL_DATE_TRIGGER = """
CREATE TRIGGER calls_call_date BEFORE INSERT OR UPDATE OF started_at, batch_id ON public.calls
FOR EACH ROW EXECUTE FUNCTION public.ser_call_date()
"""

FILL_CALL_DATE = """
UPDATE public.calls c
SET call_date = COALESCE((c.started_at AT TIME ZONE 'UTC')::date, b.batch_date)
FROM public.batches b WHERE b.id = c.batch_id
"""

# As etl.scoring.rollup.refresh_rollup, for every day at once (kept here so the migration stays fixed).
FILL_ROLLUP = """
INSERT INTO public.daily_emotion_rollup (call_date, queue, agent_id, role, emotion,
                                         model_version_id, calls, segments, speech_s, abstained_s)
SELECT c.call_date, c.queue, c.agent_id, s.role, s.emotion, s.model_version_id,
       count(DISTINCT s.call_id), count(*), sum(s.end_s - s.start_s),
       COALESCE(sum(s.end_s - s.start_s) FILTER (WHERE s.abstained), 0)
FROM public.calls c
JOIN public.call_segments s ON s.call_id = c.id
GROUP BY c.call_date, c.queue, c.agent_id, s.role, s.emotion, s.model_version_id
"""

DAILY_TRENDS = """
CREATE OR REPLACE VIEW analytics.daily_trends AS
SELECT r.call_date                                AS day,
       r.queue,
       r.agent_id,
       r.role,
       r.emotion,
       r.model_version_id,
       r.calls,
       r.segments,
       r.speech_s,
       r.speech_s / NULLIF(sum(r.speech_s) OVER (
           PARTITION BY r.call_date, r.queue, r.agent_id, r.role, r.model_version_id), 0) AS share,
       r.abstained_s
FROM public.daily_emotion_rollup r
"""


_revision = revision_module


def _replaceable(ddl: str) -> str:
    # CREATE OR REPLACE keeps a view's grants and comment; every definition here keeps columns
    return ddl.replace("CREATE VIEW", "CREATE OR REPLACE VIEW", 1)


def _stored_date(ddl: str) -> str:
    assert OLD_CALL_DATE in ddl, "the earlier view no longer computes call_date as expected"
    return _replaceable(ddl).replace(OLD_CALL_DATE, NEW_CALL_DATE)


def _previous_views() -> dict[str, str]:
    """The view definitions at revision aad6ca938054, by view name."""
    trusted, metrics = _revision("9d2f6b1c4e81"), _revision("aad6ca938054")
    return {"calls": metrics.CALLS, "segments": trusted.SEGMENTS,
            "call_events": metrics.CALL_EVENTS, "daily_trends": trusted.DAILY_TRENDS,
            "escalations": trusted.ESCALATIONS}


def upgrade() -> None:
    op.add_column("calls", sa.Column("call_date", sa.Date(), nullable=True))
    op.execute(FILL_CALL_DATE)
    op.alter_column("calls", "call_date", nullable=False)
    op.create_index(op.f("ix_calls_call_date"), "calls", ["call_date"], unique=False)
    op.execute(CALL_DATE_FUNCTION)
    op.execute(CALL_DATE_TRIGGER)
    op.create_table(
        "daily_emotion_rollup",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("call_date", sa.Date(), nullable=False),
        sa.Column("queue", sa.String(length=64), nullable=True),
        sa.Column("agent_id", sa.String(length=64), nullable=True),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("emotion", sa.String(length=32), nullable=False),
        sa.Column("model_version_id", sa.Integer(), nullable=False),
        sa.Column("calls", sa.BigInteger(), nullable=False),
        sa.Column("segments", sa.BigInteger(), nullable=False),
        sa.Column("speech_s", sa.Float(), nullable=False),
        sa.Column("abstained_s", sa.Float(), nullable=False),
        sa.Column("segments_pruned", sa.Boolean(), server_default="false", nullable=False),
        sa.ForeignKeyConstraint(
            ["model_version_id"], ["model_versions.id"],
            name=op.f("fk_daily_emotion_rollup_model_version_id_model_versions")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_daily_emotion_rollup")),
    )
    op.create_index(op.f("ix_daily_emotion_rollup_call_date"), "daily_emotion_rollup",
                    ["call_date"], unique=False)
    op.execute(FILL_ROLLUP)
    views = _previous_views()
    for name in ("calls", "segments", "call_events", "escalations"):
        if OLD_CALL_DATE in views[name]:
            op.execute(_stored_date(views[name]))
    op.execute(DAILY_TRENDS)


def downgrade() -> None:
    views = _previous_views()
    for name in ("calls", "segments", "call_events", "daily_trends", "escalations"):
        op.execute(_replaceable(views[name]))
    op.drop_index(op.f("ix_daily_emotion_rollup_call_date"), table_name="daily_emotion_rollup")
    op.drop_table("daily_emotion_rollup")
    op.execute("DROP TRIGGER IF EXISTS calls_call_date ON public.calls")
    op.execute("DROP FUNCTION IF EXISTS public.ser_call_date()")
    op.drop_index(op.f("ix_calls_call_date"), table_name="calls")
    op.drop_column("calls", "call_date")
