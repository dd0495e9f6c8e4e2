"""call reviews, review queues, site operating points; analytics.reviews and the ser_reviewer role

Revision ID: e4b1c7a9d2f6
Revises: 5d1e8b7c2a90
Create Date: 2026-12-07 17:00:00+00:00

Supervisors' verdicts (``call_reviews``), the calls drawn for them to judge with their sampling
probabilities (``review_queues``, ``review_queue_calls``) and the operating points chosen on
those verdicts (``site_operating_points``). ``analytics.reviews`` shows every verdict with
``is_latest`` marking the one that counts for its recording; ``analytics.add_review(...)`` is the
one way to add a verdict from SQL: it copies the call's key, hash, batch date, model version and
decision so the review outlives rescoring. It runs with its owner's rights, so ``ser_reviewer``
(a cluster-wide NOLOGIN role, created like ``ser_analyst``) needs no right on any table: it may
read the analytics views and call that function, nothing else. ``ser_analyst`` may read the new
view but not add to it. Downgrade drops the function, view and tables and revokes this
database's grants; it never drops a role (other databases may share it).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "e4b1c7a9d2f6"
down_revision: str | None = "5d1e8b7c2a90"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ANALYST = "ser_analyst"
REVIEWER = "ser_reviewer"

REVIEWS = """
CREATE VIEW analytics.reviews AS
SELECT r.id                  AS review_id,
       r.call_id,
       r.call_key,
       r.call_sha256,
       r.batch_date,
       r.model_version_id,
       rm.name               AS model_name,
       mv.version            AS model_version,
       r.escalated,
       r.escalation_rule,
       r.verdict,
       (r.escalated = (r.verdict = 'right')) AS should_escalate,
       r.customer_emotion,
       r.note,
       r.reviewed_by,
       r.db_user,
       r.reviewed_at,
       r.id = max(r.id) OVER (PARTITION BY COALESCE(r.call_sha256, 'call:' || r.call_id::text,
                                                    'review:' || r.id::text)) AS is_latest
FROM public.call_reviews r
LEFT JOIN public.model_versions mv    ON mv.id = r.model_version_id
LEFT JOIN public.registered_models rm ON rm.id = mv.registered_model_id
"""

ADD_REVIEW = """
CREATE FUNCTION analytics.add_review(p_call_id bigint, p_verdict text,
                                     p_customer_emotion text DEFAULT NULL,
                                     p_note text DEFAULT NULL,
                                     p_reviewed_by text DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp
AS $$
DECLARE
    new_id bigint;
BEGIN
    IF p_verdict IS NULL OR p_verdict NOT IN ('right', 'wrong') THEN
        RAISE EXCEPTION 'verdict must be right or wrong (the escalation decision), not %',
            quote_nullable(p_verdict) USING ERRCODE = '22023';
    END IF;
    INSERT INTO public.call_reviews (call_id, call_key, call_sha256, batch_date,
                                     model_version_id, escalated, escalation_rule, verdict,
                                     customer_emotion, note, reviewed_by)
    SELECT c.id, c.call_key, c.sha256, b.batch_date, b.model_version_id,
           COALESCE(s.escalated, false), s.escalation_rule, p_verdict,
           NULLIF(btrim(p_customer_emotion), ''), NULLIF(p_note, ''),
           COALESCE(NULLIF(btrim(p_reviewed_by), ''), session_user)
    FROM public.calls c
    JOIN public.batches b ON b.id = c.batch_id
    LEFT JOIN public.call_summaries s
           ON s.call_id = c.id AND s.model_version_id = b.model_version_id
    WHERE c.id = p_call_id AND c.status = 'scored'
    RETURNING id INTO new_id;
    IF new_id IS NULL THEN
        RAISE EXCEPTION 'no scored call with id %', p_call_id USING ERRCODE = '22023';
    END IF;
    RETURN new_id;
END
$$
"""


def _create_role(role: str) -> str:
    """A DO block creating ``role`` if missing (tolerating a concurrent creator or a migrating
    user without CREATEROLE, as the analytics migration does)."""
    return f"""
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{role}') THEN
        BEGIN
            CREATE ROLE {role} NOLOGIN;
        EXCEPTION
            WHEN duplicate_object OR unique_violation THEN NULL;
            WHEN insufficient_privilege THEN
                RAISE NOTICE 'no privilege to create role {role}; reviews work without it';
        END;
    END IF;
END
$$
"""


GRANTS = f"""
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{REVIEWER}') THEN
        GRANT USAGE ON SCHEMA analytics TO {REVIEWER};
        GRANT SELECT ON ALL TABLES IN SCHEMA analytics TO {REVIEWER};
        GRANT EXECUTE ON FUNCTION analytics.add_review(bigint, text, text, text, text)
            TO {REVIEWER};
    END IF;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{ANALYST}') THEN
        GRANT SELECT ON analytics.reviews TO {ANALYST};
    END IF;
END
$$
"""

REVOKES = f"""
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{REVIEWER}') THEN
        REVOKE ALL ON ALL TABLES IN SCHEMA analytics FROM {REVIEWER};
        REVOKE ALL ON SCHEMA analytics FROM {REVIEWER};
    END IF;
END
$$
"""


def upgrade() -> None:
    op.create_table(
        "call_reviews",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("call_id", sa.Integer(), nullable=True),
        sa.Column("call_key", sa.Text(), nullable=False),
        sa.Column("call_sha256", sa.String(length=64), nullable=True),
        sa.Column("batch_date", sa.Date(), nullable=False),
        sa.Column("model_version_id", sa.Integer(), nullable=True),
        sa.Column("escalated", sa.Boolean(), nullable=False),
        sa.Column("escalation_rule", sa.String(length=64), nullable=True),
        sa.Column("verdict", sa.String(length=8), nullable=False),
        sa.Column("customer_emotion", sa.String(length=32), nullable=True),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("reviewed_by", sa.String(length=128), nullable=False),
        sa.Column("db_user", sa.String(length=128), server_default=sa.text("session_user"),
                  nullable=False),
        sa.Column("reviewed_at", sa.DateTime(timezone=True), server_default=sa.text("now()"),
                  nullable=False),
        sa.CheckConstraint("verdict IN ('right', 'wrong')",
                           name=op.f("ck_call_reviews_verdict_valid")),
        sa.ForeignKeyConstraint(["call_id"], ["calls.id"], ondelete="SET NULL",
                                name=op.f("fk_call_reviews_call_id_calls")),
        sa.ForeignKeyConstraint(["model_version_id"], ["model_versions.id"], ondelete="SET NULL",
                                name=op.f("fk_call_reviews_model_version_id_model_versions")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_call_reviews")),
    )
    op.create_index(op.f("ix_call_reviews_call_id"), "call_reviews", ["call_id"])
    op.create_index(op.f("ix_call_reviews_call_sha256"), "call_reviews", ["call_sha256"])
    op.create_table(
        "review_queues",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("model_version_id", sa.Integer(), nullable=False),
        sa.Column("first_date", sa.Date(), nullable=False),
        sa.Column("last_date", sa.Date(), nullable=False),
        sa.Column("seed", sa.Integer(), nullable=False),
        sa.Column("sample_size", sa.Integer(), nullable=False),
        sa.Column("n_escalated", sa.Integer(), nullable=False),
        sa.Column("n_not_escalated", sa.Integer(), nullable=False),
        sa.Column("created_by", sa.String(length=128), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"),
                  nullable=False),
        sa.ForeignKeyConstraint(["model_version_id"], ["model_versions.id"],
                                name=op.f("fk_review_queues_model_version_id_model_versions")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_review_queues")),
    )
    op.create_table(
        "review_queue_calls",
        sa.Column("queue_id", sa.Integer(), nullable=False),
        sa.Column("call_id", sa.Integer(), nullable=False),
        sa.Column("stratum", sa.String(length=16), nullable=False),
        sa.Column("probability", sa.Float(), nullable=False),
        sa.CheckConstraint("probability > 0 AND probability <= 1",
                           name=op.f("ck_review_queue_calls_probability_valid")),
        sa.ForeignKeyConstraint(["call_id"], ["calls.id"],
                                name=op.f("fk_review_queue_calls_call_id_calls")),
        sa.ForeignKeyConstraint(["queue_id"], ["review_queues.id"], ondelete="CASCADE",
                                name=op.f("fk_review_queue_calls_queue_id_review_queues")),
        sa.PrimaryKeyConstraint("queue_id", "call_id", name=op.f("pk_review_queue_calls")),
    )
    op.create_index(op.f("ix_review_queue_calls_call_id"), "review_queue_calls", ["call_id"])
    op.create_table(
        "site_operating_points",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("model_version_id", sa.Integer(), nullable=False),
        sa.Column("rules", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("confidence_floor", sa.Float(), nullable=False),
        sa.Column("target_precision", sa.Float(), nullable=False),
        sa.Column("review_ids", postgresql.ARRAY(sa.BigInteger()), nullable=False),
        sa.Column("before", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("after", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("created_by", sa.String(length=128), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"),
                  nullable=False),
        sa.ForeignKeyConstraint(["model_version_id"], ["model_versions.id"], ondelete="CASCADE",
                                name=op.f("fk_site_operating_points_model_version_id_model_versions")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_site_operating_points")),
    )
    op.create_index(op.f("ix_site_operating_points_model_version_id"), "site_operating_points",
                    ["model_version_id"])
    op.execute(REVIEWS)
    op.execute("COMMENT ON VIEW analytics.reviews IS 'Supervisors'' verdicts on calls; "
               "is_latest marks the verdict that counts for its recording'")
    op.execute(ADD_REVIEW)
    # Functions are executable by PUBLIC unless revoked: only reviewers may add verdicts.
    op.execute("REVOKE ALL ON FUNCTION analytics.add_review(bigint, text, text, text, text) "
               "FROM PUBLIC")
    op.execute(_create_role(REVIEWER))
    op.execute(GRANTS)


def downgrade() -> None:
    op.execute(REVOKES)
    op.execute("DROP FUNCTION IF EXISTS analytics.add_review(bigint, text, text, text, text)")
    op.execute("DROP VIEW IF EXISTS analytics.reviews")
    op.drop_index(op.f("ix_site_operating_points_model_version_id"),
                  table_name="site_operating_points")
    op.drop_table("site_operating_points")
    op.drop_index(op.f("ix_review_queue_calls_call_id"), table_name="review_queue_calls")
    op.drop_table("review_queue_calls")
    op.drop_table("review_queues")
    op.drop_index(op.f("ix_call_reviews_call_sha256"), table_name="call_reviews")
    op.drop_index(op.f("ix_call_reviews_call_id"), table_name="call_reviews")
    op.drop_table("call_reviews")
