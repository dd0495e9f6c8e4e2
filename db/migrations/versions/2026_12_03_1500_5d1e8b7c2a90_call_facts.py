"""call facts: analytics.calls reads one table keyed and indexed by call_date

Revision ID: 5d1e8b7c2a90
Revises: 0c7c9ff93104
Create Date: 2026-12-03 15:00:00+00:00

``analytics.calls`` joined every call to the summary of its batch's model version at query
time. A window of days found its calls through ``ix_calls_call_date``, but the summaries have no
date, so PostgreSQL hashed or probed them all and a 30-day question grew with the whole history.
``call_facts`` holds that join's row per call (the call, its batch's dates and model version,
the summary's numbers), indexed on ``call_date``; the view reads it and joins only the model
names. Statement-level triggers with transition tables keep it equal to the join on every
write, in the writer's transaction and in bulk: inserts and updates of ``calls``, any change to
``call_summaries``, and a batch whose date or model version changes, all through one function,
``ser_refresh_call_facts(call_ids)``. A deleted call takes its fact with it (foreign key). The
view keeps its name, columns, types, order, comment and grants (``CREATE OR REPLACE VIEW``).
Upgrade fills the table from the rows present; downgrade restores the join view and drops the
table, triggers and functions.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from db.migrations.earlier import revision_module

revision: str = "5d1e8b7c2a90"
down_revision: str | None = "0c7c9ff93104"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


_revision = revision_module


METRIC_COLUMNS: tuple[str, ...] = _revision("aad6ca938054").SUMMARY_COLUMNS
INTEGER_METRICS: frozenset[str] = _revision("aad6ca938054").INTEGER_COLUMNS

# The fact columns and the join expression each comes from (analytics.calls before this
# revision, without the model names, which the view still joins).
SOURCE: tuple[tuple[str, str], ...] = (
    ("call_id", "c.id"),
    ("call_key", "c.call_key"),
    ("batch_id", "b.id"),
    ("batch_date", "b.batch_date"),
    ("call_date", "c.call_date"),
    ("started_at", "c.started_at"),
    ("agent_id", "c.agent_id"),
    ("queue", "c.queue"),
    ("status", "c.status"),
    ("error", "c.error"),
    ("sample_rate", "c.sample_rate"),
    ("channels", "c.channels"),
    ("bandwidth", "c.extra ->> 'bandwidth'"),
    ("warnings", "c.extra -> 'warnings'"),
    ("model_version_id", "b.model_version_id"),
    ("duration_s", "COALESCE(s.duration_s, c.duration_s)"),
    ("confidence_floor", "(c.extra ->> 'confidence_floor')::double precision"),
    ("escalation_rules_source", "c.extra ->> 'escalation_rules'"),
    ("talk_agent_s", "s.talk_agent_s"),
    ("talk_customer_s", "s.talk_customer_s"),
    ("silence_share", "s.silence_share"),
    ("overtalk_share", "s.overtalk_share"),
    ("negative_share_agent", "s.negative_share_agent"),
    ("negative_share_customer", "s.negative_share_customer"),
    ("longest_negative_streak_s", "s.longest_negative_streak_s"),
    ("customer_negative_first_third", "s.customer_negative_first_third"),
    ("customer_negative_last_third", "s.customer_negative_last_third"),
    ("customer_trend", "s.customer_trend"),
    ("emotion_mix", "s.emotion_mix"),
    ("customer_scored_share", "s.customer_scored_share"),
    ("customer_confidence_mean", "s.customer_confidence_mean"),
    ("customer_abstained_share", "s.customer_abstained_share"),
    ("escalated", "COALESCE(s.escalated, false)"),
    ("escalation_rule", "s.escalation_rule"),
    ("escalation_reason", "s.escalation_reason"),
    *((name, f"s.{name}") for name in METRIC_COLUMNS),
)

# analytics.calls' columns in their order; the two model names come from the joined tables.
VIEW_COLUMNS: tuple[str, ...] = (
    "call_id", "call_key", "batch_id", "batch_date", "call_date", "started_at", "agent_id",
    "queue", "status", "error", "sample_rate", "channels", "bandwidth", "warnings",
    "model_version_id", "model_name", "model_version", "duration_s", "talk_agent_s",
    "talk_customer_s", "silence_share", "overtalk_share", "negative_share_agent",
    "negative_share_customer", "longest_negative_streak_s", "customer_negative_first_third",
    "customer_negative_last_third", "customer_trend", "emotion_mix", "escalated",
    "escalation_rule", "escalation_reason", "customer_scored_share", "customer_confidence_mean",
    "customer_abstained_share", "confidence_floor", "escalation_rules_source", *METRIC_COLUMNS,
)
MODEL_NAMES = {"model_name": "rm.name", "model_version": "mv.version"}

_FACT_NAMES = ", ".join(name for name, _ in SOURCE)
_SOURCE_SELECT = ",\n       ".join(expr for _, expr in SOURCE)
_SET_ALL = ",\n    ".join(f"{name} = EXCLUDED.{name}" for name, _ in SOURCE if name != "call_id")

# The one statement that writes facts: the join analytics.calls used to compute, for some calls.
REFRESH_FUNCTION = f"""
CREATE OR REPLACE FUNCTION public.ser_refresh_call_facts(call_ids integer[]) RETURNS void
LANGUAGE sql AS $$
INSERT INTO public.call_facts ({_FACT_NAMES})
SELECT {_SOURCE_SELECT}
FROM public.calls c
JOIN public.batches b ON b.id = c.batch_id
LEFT JOIN public.call_summaries s
       ON s.call_id = c.id AND s.model_version_id = b.model_version_id
WHERE c.id = ANY(call_ids)
ON CONFLICT (call_id) DO UPDATE SET
    {_SET_ALL}
$$
"""

# Trigger functions read the statement's transition table, named "changed" by every trigger.
TRIGGER_FUNCTIONS = {
    "ser_call_facts_from_calls": "ARRAY(SELECT id FROM changed)",
    "ser_call_facts_from_summaries": "ARRAY(SELECT DISTINCT call_id FROM changed)",
    "ser_call_facts_from_batches": """ARRAY(
        SELECT c.id FROM public.calls c
        JOIN changed n ON n.id = c.batch_id
        JOIN before o ON o.id = n.id
        WHERE (o.batch_date, o.model_version_id) IS DISTINCT FROM
              (n.batch_date, n.model_version_id))""",
}

# (trigger, table, event, transition tables, function)
TRIGGERS: tuple[tuple[str, str, str, str, str], ...] = (
    ("calls_facts_insert", "calls", "INSERT", "NEW TABLE AS changed", "ser_call_facts_from_calls"),
    ("calls_facts_update", "calls", "UPDATE", "NEW TABLE AS changed", "ser_call_facts_from_calls"),
    ("call_summaries_facts_insert", "call_summaries", "INSERT", "NEW TABLE AS changed",
     "ser_call_facts_from_summaries"),
    ("call_summaries_facts_update", "call_summaries", "UPDATE", "NEW TABLE AS changed",
     "ser_call_facts_from_summaries"),
    ("call_summaries_facts_delete", "call_summaries", "DELETE", "OLD TABLE AS changed",
     "ser_call_facts_from_summaries"),
    ("batches_facts_update", "batches", "UPDATE", "OLD TABLE AS before NEW TABLE AS changed",
     "ser_call_facts_from_batches"),
)

CALLS_VIEW = "CREATE OR REPLACE VIEW analytics.calls AS\nSELECT {}\n{}".format(
    ",\n       ".join(f"{MODEL_NAMES[n]} AS {n}" if n in MODEL_NAMES else f"f.{n}"
                      for n in VIEW_COLUMNS),
    """FROM public.call_facts f
JOIN public.model_versions mv    ON mv.id = f.model_version_id
JOIN public.registered_models rm ON rm.id = mv.registered_model_id""")


def _fact_type(name: str) -> sa.types.TypeEngine[object]:
    if name in {"call_id", "batch_id", "sample_rate", "channels", "model_version_id"} or (
            name in INTEGER_METRICS):
        return sa.Integer()
    if name in {"batch_date", "call_date"}:
        return sa.Date()
    if name == "started_at":
        return sa.DateTime(timezone=True)
    if name in {"agent_id", "queue", "escalation_rule"}:
        return sa.String(length=64)
    if name == "status":
        return sa.String(length=16)
    if name in {"call_key", "error", "bandwidth", "escalation_reason", "escalation_rules_source"}:
        return sa.Text()
    if name in {"warnings", "emotion_mix"}:
        return postgresql.JSONB(astext_type=sa.Text())
    if name == "escalated":
        return sa.Boolean()
    return sa.Float()


NOT_NULL = frozenset({"call_id", "call_key", "batch_id", "batch_date", "call_date", "status",
                      "model_version_id", "escalated"})


def upgrade() -> None:
    op.create_table(
        "call_facts",
        *(sa.Column(name, _fact_type(name), nullable=name not in NOT_NULL) for name, _ in SOURCE),
        sa.ForeignKeyConstraint(["call_id"], ["calls.id"],
                                name=op.f("fk_call_facts_call_id_calls"), ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["model_version_id"], ["model_versions.id"],
                                name=op.f("fk_call_facts_model_version_id_model_versions")),
        sa.PrimaryKeyConstraint("call_id", name=op.f("pk_call_facts")),
    )
    op.create_index(op.f("ix_call_facts_call_date"), "call_facts", ["call_date"], unique=False)
    op.create_index(op.f("ix_call_facts_batch_id"), "call_facts", ["batch_id"], unique=False)
    op.execute(REFRESH_FUNCTION)
    for function, call_ids in TRIGGER_FUNCTIONS.items():
        op.execute(f"""
CREATE OR REPLACE FUNCTION public.{function}() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM public.ser_refresh_call_facts({call_ids});
    RETURN NULL;
END
$$""")
    for trigger, table, event, transition, function in TRIGGERS:
        op.execute(f"CREATE TRIGGER {trigger} AFTER {event} ON public.{table} "
                   f"REFERENCING {transition} FOR EACH STATEMENT "
                   f"EXECUTE FUNCTION public.{function}()")
    op.execute("SELECT public.ser_refresh_call_facts(ARRAY(SELECT id FROM public.calls))")
    op.execute(CALLS_VIEW)


def downgrade() -> None:
    op.execute(_revision("819c813532a8")._stored_date(_revision("aad6ca938054").CALLS))
    for trigger, table, *_ in TRIGGERS:
        op.execute(f"DROP TRIGGER IF EXISTS {trigger} ON public.{table}")
    for function in TRIGGER_FUNCTIONS:
        op.execute(f"DROP FUNCTION IF EXISTS public.{function}()")
    op.execute("DROP FUNCTION IF EXISTS public.ser_refresh_call_facts(integer[])")
    op.drop_index(op.f("ix_call_facts_batch_id"), table_name="call_facts")
    op.drop_index(op.f("ix_call_facts_call_date"), table_name="call_facts")
    op.drop_table("call_facts")
