"""SQLAlchemy 2.0 typed models. Migrations under db/migrations mirror these exactly.

One idea, the schema, in one file although it is long: it is the single ``Base.metadata`` that
Alembic's autogenerate compares the migrations against (``db/migrations/env.py``,
``tests/test_migrations.py``), its tables refer to each other across areas (``model_versions``
from calls, segments, summaries, rollups and reviews; ``call_facts`` takes its columns from
``call_summaries``), and split modules would need a package that imports them all for the
metadata to be complete.

Vocabulary (see STYLE.md): corpus, actor, clip, label scheme, feature set, model version,
batch, call, segment, escalation.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, ClassVar

from sqlalchemy import (
    REAL,
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    func,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map: ClassVar[dict[Any, Any]] = {dict[str, Any]: JSONB}


def _now() -> Any:
    return func.now()


# --------------------------------------------------------------------------------------------
# Ingest (issue 2)
# --------------------------------------------------------------------------------------------


class IngestRun(Base):
    """One invocation of `ser ingest`: what was asked and what happened."""

    __tablename__ = "ingest_runs"

    id: Mapped[int] = mapped_column(primary_key=True)
    corpus: Mapped[str] = mapped_column(String(32))
    path: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), server_default=_now())
    finished_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    status: Mapped[str] = mapped_column(String(16), server_default="running")
    files_seen: Mapped[int] = mapped_column(Integer, server_default="0")
    added: Mapped[int] = mapped_column(Integer, server_default="0")
    skipped: Mapped[int] = mapped_column(Integer, server_default="0")
    failed: Mapped[int] = mapped_column(Integer, server_default="0")
    actors_added: Mapped[int] = mapped_column(Integer, server_default="0")
    options: Mapped[dict[str, Any]] = mapped_column(server_default="{}")


class IngestError(Base):
    """A file or CSV row that could not be ingested, with the reason."""

    __tablename__ = "ingest_errors"

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("ingest_runs.id", ondelete="CASCADE"), index=True)
    path: Mapped[str] = mapped_column(Text)
    row_number: Mapped[int | None] = mapped_column(Integer)
    reason: Mapped[str] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), server_default=_now())


class Actor(Base):
    """A person who speaks in a corpus, with whatever demographics the corpus documents."""

    __tablename__ = "actors"
    __table_args__ = (UniqueConstraint("corpus", "actor_code"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    corpus: Mapped[str] = mapped_column(String(32))
    actor_code: Mapped[str] = mapped_column(String(64))
    sex: Mapped[str | None] = mapped_column(String(16))
    age: Mapped[int | None] = mapped_column(Integer)
    race: Mapped[str | None] = mapped_column(String(64))
    ethnicity: Mapped[str | None] = mapped_column(String(64))
    demographics_source: Mapped[str | None] = mapped_column(Text)
    extra: Mapped[dict[str, Any]] = mapped_column(server_default="{}")


class Clip(Base):
    """One labelled corpus recording, identified by its content (sha256).

    A path whose content changed is a new row with ``version`` + 1; the old row stays with
    ``is_current = false``.
    """

    __tablename__ = "clips"
    __table_args__ = (
        UniqueConstraint("corpus", "sha256"),
        Index("ix_clips_corpus_path", "corpus", "path"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    corpus: Mapped[str] = mapped_column(String(32), index=True)
    path: Mapped[str] = mapped_column(Text)
    clip_name: Mapped[str] = mapped_column(Text, index=True)
    sha256: Mapped[str] = mapped_column(String(64))
    version: Mapped[int] = mapped_column(Integer, server_default="1")
    is_current: Mapped[bool] = mapped_column(Boolean, server_default="true")
    actor_id: Mapped[int | None] = mapped_column(ForeignKey("actors.id"), index=True)
    emotion: Mapped[str] = mapped_column(String(32), index=True)
    emotion_code: Mapped[str] = mapped_column(String(16))
    intensity: Mapped[str | None] = mapped_column(String(16))
    statement: Mapped[str | None] = mapped_column(String(64))
    repetition: Mapped[int | None] = mapped_column(Integer)
    label_source: Mapped[str] = mapped_column(String(64))
    label_confidence: Mapped[float | None] = mapped_column(Float)
    audio_format: Mapped[str | None] = mapped_column(String(16))
    sample_rate: Mapped[int] = mapped_column(Integer)
    channels: Mapped[int] = mapped_column(Integer)
    frames: Mapped[int] = mapped_column(BigInteger)
    duration_s: Mapped[float] = mapped_column(Float)
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    extra: Mapped[dict[str, Any]] = mapped_column(server_default="{}")
    ingest_run_id: Mapped[int | None] = mapped_column(ForeignKey("ingest_runs.id"))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), server_default=_now())


class LabelVote(Base):
    """Crowd ratings of a clip (CREMA-D tabulatedVotes.csv): agreement is a label confidence."""

    __tablename__ = "label_votes"
    __table_args__ = (UniqueConstraint("corpus", "clip_name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    corpus: Mapped[str] = mapped_column(String(32))
    clip_name: Mapped[str] = mapped_column(Text)
    num_responses: Mapped[int] = mapped_column(Integer)
    agreement: Mapped[float] = mapped_column(Float)
    vote_emotion: Mapped[str | None] = mapped_column(String(32))
    votes: Mapped[dict[str, Any]] = mapped_column(server_default="{}")


# --------------------------------------------------------------------------------------------
# Features (issue 3)
# --------------------------------------------------------------------------------------------


class FeatureSet(Base):
    """A named, versioned feature list with its parameters. New params -> new version."""

    __tablename__ = "feature_sets"
    __table_args__ = (
        UniqueConstraint("name", "channel", "params_hash"),
        UniqueConstraint("name", "channel", "version"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64))
    channel: Mapped[str] = mapped_column(String(16), server_default="studio")
    version: Mapped[int] = mapped_column(Integer)
    feature_names: Mapped[list[str]] = mapped_column(ARRAY(Text))
    params: Mapped[dict[str, Any]] = mapped_column()
    params_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), server_default=_now())


class ClipFeatures(Base):
    """Feature values of one clip (or one segment of it) for one feature set version."""

    __tablename__ = "clip_features"

    clip_id: Mapped[int] = mapped_column(
        ForeignKey("clips.id", ondelete="CASCADE"), primary_key=True
    )
    feature_set_id: Mapped[int] = mapped_column(
        ForeignKey("feature_sets.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    seg_start_s: Mapped[float] = mapped_column(Float, primary_key=True, server_default="0")
    seg_end_s: Mapped[float] = mapped_column(Float, primary_key=True, server_default="-1")
    # 0 = the clip as recorded; 1..n = augmented copies (feature sets with params["augment"])
    variant: Mapped[int] = mapped_column(Integer, primary_key=True, server_default="0")
    values: Mapped[list[float]] = mapped_column(ARRAY(REAL))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), server_default=_now())


class FeatureError(Base):
    """A clip whose features could not be computed (silent, too short, undecodable)."""

    __tablename__ = "feature_errors"

    clip_id: Mapped[int] = mapped_column(
        ForeignKey("clips.id", ondelete="CASCADE"), primary_key=True
    )
    feature_set_id: Mapped[int] = mapped_column(
        ForeignKey("feature_sets.id", ondelete="CASCADE"), primary_key=True
    )
    reason: Mapped[str] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), server_default=_now())


# --------------------------------------------------------------------------------------------
# Label schemes, training, registry (issue 4)
# --------------------------------------------------------------------------------------------


class LabelScheme(Base):
    __tablename__ = "label_schemes"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    description: Mapped[str] = mapped_column(Text)


class LabelSchemeClass(Base):
    """canonical emotion -> class label, per scheme. Emotions not listed are excluded."""

    __tablename__ = "label_scheme_classes"

    scheme: Mapped[str] = mapped_column(
        ForeignKey("label_schemes.name", ondelete="CASCADE"), primary_key=True
    )
    emotion: Mapped[str] = mapped_column(String(32), primary_key=True)
    class_label: Mapped[str] = mapped_column(String(32))
    is_negative: Mapped[bool] = mapped_column(Boolean, server_default="false")


class RegisteredModel(Base):
    __tablename__ = "registered_models"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    description: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), server_default=_now())


class ModelVersion(Base):
    """One trained model with everything needed to trust and reproduce it."""

    __tablename__ = "model_versions"
    __table_args__ = (UniqueConstraint("registered_model_id", "version"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    registered_model_id: Mapped[int] = mapped_column(ForeignKey("registered_models.id"))
    version: Mapped[int] = mapped_column(Integer)
    algorithm: Mapped[str] = mapped_column(String(64))
    params: Mapped[dict[str, Any]] = mapped_column(server_default="{}")
    feature_set_id: Mapped[int] = mapped_column(ForeignKey("feature_sets.id"))
    label_scheme: Mapped[str] = mapped_column(ForeignKey("label_schemes.name"))
    classes: Mapped[list[str]] = mapped_column(ARRAY(Text))
    speaker_normalisation: Mapped[bool] = mapped_column(Boolean, server_default="false")
    training_clip_ids: Mapped[list[int]] = mapped_column(ARRAY(Integer))
    training_set_sha256: Mapped[str] = mapped_column(String(64))
    folds_sha256: Mapped[str | None] = mapped_column(String(64))
    seed: Mapped[int] = mapped_column(Integer, server_default="0")
    code_version: Mapped[str] = mapped_column(String(64))
    cv_uar: Mapped[float | None] = mapped_column(Float)
    artifact_format: Mapped[str] = mapped_column(String(32))
    artifact: Mapped[bytes] = mapped_column(LargeBinary)
    artifact_sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), server_default=_now())


class ModelMetric(Base):
    """One number about a model version. fold NULL = pooled over all folds; group e.g. sex=female."""

    __tablename__ = "model_metrics"

    id: Mapped[int] = mapped_column(primary_key=True)
    model_version_id: Mapped[int] = mapped_column(
        ForeignKey("model_versions.id", ondelete="CASCADE"), index=True
    )
    fold: Mapped[int | None] = mapped_column(Integer)
    metric: Mapped[str] = mapped_column(String(64))
    class_label: Mapped[str | None] = mapped_column(String(32))
    group_name: Mapped[str | None] = mapped_column(String(32))
    group_value: Mapped[str | None] = mapped_column(String(64))
    value: Mapped[float] = mapped_column(Float)
    extra: Mapped[dict[str, Any] | None] = mapped_column()


class ModelAlias(Base):
    __tablename__ = "model_aliases"

    alias: Mapped[str] = mapped_column(String(64), primary_key=True)
    model_version_id: Mapped[int] = mapped_column(ForeignKey("model_versions.id"))
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), server_default=_now())


class AliasHistory(Base):
    __tablename__ = "alias_history"

    id: Mapped[int] = mapped_column(primary_key=True)
    alias: Mapped[str] = mapped_column(String(64))
    model_version_id: Mapped[int] = mapped_column(ForeignKey("model_versions.id"))
    previous_model_version_id: Mapped[int | None] = mapped_column(ForeignKey("model_versions.id"))
    reason: Mapped[str | None] = mapped_column(Text)
    promoted_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), server_default=_now())


# --------------------------------------------------------------------------------------------
# Nightly scoring (issue 5)
# --------------------------------------------------------------------------------------------


class Batch(Base):
    """The recordings scored together in one nightly (or manual) run with one model version."""

    __tablename__ = "batches"
    __table_args__ = (UniqueConstraint("source_path", "batch_date", "model_version_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    batch_date: Mapped[dt.date] = mapped_column(Date, index=True)
    source_path: Mapped[str] = mapped_column(Text)
    model_version_id: Mapped[int] = mapped_column(ForeignKey("model_versions.id"))
    status: Mapped[str] = mapped_column(String(16), server_default="running")
    started_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), server_default=_now())
    finished_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    n_calls: Mapped[int] = mapped_column(Integer, server_default="0")
    n_scored: Mapped[int] = mapped_column(Integer, server_default="0")
    n_failed: Mapped[int] = mapped_column(Integer, server_default="0")
    n_escalations: Mapped[int] = mapped_column(Integer, server_default="0")
    audio_seconds: Mapped[float] = mapped_column(Float, server_default="0")
    options: Mapped[dict[str, Any]] = mapped_column(server_default="{}")


class Call(Base):
    """One recording; ``status`` doubles as the claim row that stops two runs double-scoring."""

    __tablename__ = "calls"
    __table_args__ = (
        UniqueConstraint("batch_id", "call_key"),
        CheckConstraint(
            "status IN ('pending', 'claimed', 'scored', 'failed')", name="status_valid"
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    batch_id: Mapped[int] = mapped_column(ForeignKey("batches.id", ondelete="CASCADE"), index=True)
    call_key: Mapped[str] = mapped_column(Text)
    path: Mapped[str] = mapped_column(Text)
    sha256: Mapped[str | None] = mapped_column(String(64))
    # The file's size and modification time when it was registered: a later night hashes the
    # file again only when these moved (etl/runs/registration.register_batch, docs/operations.md).
    file_size: Mapped[int | None] = mapped_column(BigInteger)
    file_mtime_ns: Mapped[int | None] = mapped_column(BigInteger)
    agent_id: Mapped[str | None] = mapped_column(String(64), index=True)
    queue: Mapped[str | None] = mapped_column(String(64), index=True)
    started_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    # The day the call belongs to: the UTC date of started_at, else the batch date. Filled by
    # the trigger calls_call_date when the row is written (migration 819c813532a8), so every
    # writer and every session agrees on it and date filters can use the index.
    call_date: Mapped[dt.date] = mapped_column(Date, index=True)
    channel_roles: Mapped[dict[str, Any]] = mapped_column(server_default="{}")
    sample_rate: Mapped[int | None] = mapped_column(Integer)
    channels: Mapped[int | None] = mapped_column(Integer)
    duration_s: Mapped[float | None] = mapped_column(Float)
    status: Mapped[str] = mapped_column(String(16), server_default="pending")
    claimed_by: Mapped[str | None] = mapped_column(String(128))
    claimed_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    error: Mapped[str | None] = mapped_column(Text)
    extra: Mapped[dict[str, Any]] = mapped_column(server_default="{}")


class CallSegment(Base):
    """A stretch of speech in one role of one call, scored by one model version."""

    __tablename__ = "call_segments"
    __table_args__ = (UniqueConstraint("call_id", "model_version_id", "role", "start_s"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    call_id: Mapped[int] = mapped_column(ForeignKey("calls.id", ondelete="CASCADE"), index=True)
    model_version_id: Mapped[int] = mapped_column(ForeignKey("model_versions.id"))
    role: Mapped[str] = mapped_column(String(16))
    start_s: Mapped[float] = mapped_column(Float)
    end_s: Mapped[float] = mapped_column(Float)
    emotion: Mapped[str] = mapped_column(String(32))
    confidence: Mapped[float] = mapped_column(Float)
    is_negative: Mapped[bool] = mapped_column(Boolean)
    probabilities: Mapped[dict[str, Any]] = mapped_column()
    # below the model's confidence floor: kept, but neither negative nor counted in summaries
    abstained: Mapped[bool] = mapped_column(Boolean, server_default="false")


class CallSummary(Base):
    """Per-call summary for one model version, with the escalation decision and its reason."""

    __tablename__ = "call_summaries"

    call_id: Mapped[int] = mapped_column(ForeignKey("calls.id", ondelete="CASCADE"), primary_key=True)
    model_version_id: Mapped[int] = mapped_column(ForeignKey("model_versions.id"), primary_key=True)
    duration_s: Mapped[float] = mapped_column(Float)
    talk_agent_s: Mapped[float] = mapped_column(Float)
    talk_customer_s: Mapped[float] = mapped_column(Float)
    silence_share: Mapped[float] = mapped_column(Float)
    overtalk_share: Mapped[float] = mapped_column(Float)
    negative_share_agent: Mapped[float | None] = mapped_column(Float)
    negative_share_customer: Mapped[float | None] = mapped_column(Float)
    longest_negative_streak_s: Mapped[float] = mapped_column(Float)
    customer_negative_first_third: Mapped[float | None] = mapped_column(Float)
    customer_negative_last_third: Mapped[float | None] = mapped_column(Float)
    customer_trend: Mapped[float | None] = mapped_column(Float)
    emotion_mix: Mapped[dict[str, Any]] = mapped_column(server_default="{}")
    customer_scored_share: Mapped[float | None] = mapped_column(Float)
    customer_confidence_mean: Mapped[float | None] = mapped_column(Float)
    customer_abstained_share: Mapped[float | None] = mapped_column(Float)
    escalated: Mapped[bool] = mapped_column(Boolean, server_default="false")
    escalation_rule: Mapped[str | None] = mapped_column(String(64))
    escalation_reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), server_default=_now())
    # Conversation metrics (etl/scoring/call_metrics.py); NULL for calls scored before they existed.
    negative_share_agent_q1: Mapped[float | None] = mapped_column(Float)
    negative_share_agent_q2: Mapped[float | None] = mapped_column(Float)
    negative_share_agent_q3: Mapped[float | None] = mapped_column(Float)
    negative_share_agent_q4: Mapped[float | None] = mapped_column(Float)
    negative_share_customer_q1: Mapped[float | None] = mapped_column(Float)
    negative_share_customer_q2: Mapped[float | None] = mapped_column(Float)
    negative_share_customer_q3: Mapped[float | None] = mapped_column(Float)
    negative_share_customer_q4: Mapped[float | None] = mapped_column(Float)
    turns_agent: Mapped[int | None] = mapped_column(Integer)
    turns_customer: Mapped[int | None] = mapped_column(Integer)
    turn_mean_agent_s: Mapped[float | None] = mapped_column(Float)
    turn_mean_customer_s: Mapped[float | None] = mapped_column(Float)
    turn_longest_agent_s: Mapped[float | None] = mapped_column(Float)
    turn_longest_customer_s: Mapped[float | None] = mapped_column(Float)
    agent_response_latency_s: Mapped[float | None] = mapped_column(Float)
    interruptions_by_agent: Mapped[int | None] = mapped_column(Integer)
    interruptions_by_customer: Mapped[int | None] = mapped_column(Integer)
    interruption_overlap_s: Mapped[float | None] = mapped_column(Float)
    long_silence_count: Mapped[int | None] = mapped_column(Integer)
    long_silence_s: Mapped[float | None] = mapped_column(Float)
    long_silence_longest_s: Mapped[float | None] = mapped_column(Float)
    loudness_agent_dbfs: Mapped[float | None] = mapped_column(Float)
    loudness_customer_dbfs: Mapped[float | None] = mapped_column(Float)
    loudness_change_agent_db: Mapped[float | None] = mapped_column(Float)
    loudness_change_customer_db: Mapped[float | None] = mapped_column(Float)
    speaking_rate_agent: Mapped[float | None] = mapped_column(Float)
    speaking_rate_customer: Mapped[float | None] = mapped_column(Float)


# Summary columns a call fact carries: all of call_summaries' but its keys, created_at and
# duration_s (the fact's duration_s falls back to the call's own when there is no summary).
_FACT_SUMMARY_SKIP = frozenset({"call_id", "model_version_id", "created_at", "duration_s"})


def _fact_summary_columns() -> list[Column[Any]]:
    """``call_summaries``' numbers as nullable columns (a call not scored yet has none)."""
    return [Column(c.name, c.type, nullable=c.name != "escalated")
            for c in CallSummary.__table__.columns if c.name not in _FACT_SUMMARY_SKIP]


class CallFact(Base):
    """One row per call: the call, its batch and the summary of the batch's model version,
    stored together so a date window on ``analytics.calls`` reads one indexed table.

    Kept equal to that join by statement triggers on ``calls``, ``call_summaries`` and
    ``batches`` (migration 5d1e8b7c2a90, function ``ser_refresh_call_facts``): nothing in
    Python writes it. Columns are named as ``analytics.calls`` shows them.
    """

    __table__ = Table(
        "call_facts",
        Base.metadata,
        Column("call_id", Integer, ForeignKey("calls.id", ondelete="CASCADE"), primary_key=True),
        Column("call_key", Text, nullable=False),
        Column("batch_id", Integer, nullable=False, index=True),
        Column("batch_date", Date, nullable=False),
        Column("call_date", Date, nullable=False, index=True),
        Column("started_at", DateTime(timezone=True)),
        Column("agent_id", String(64)),
        Column("queue", String(64)),
        Column("status", String(16), nullable=False),
        Column("error", Text),
        Column("sample_rate", Integer),
        Column("channels", Integer),
        Column("bandwidth", Text),
        Column("warnings", JSONB),
        Column("model_version_id", Integer, ForeignKey("model_versions.id"), nullable=False),
        Column("duration_s", Float),
        Column("confidence_floor", Float),
        Column("escalation_rules_source", Text),
        *_fact_summary_columns(),
    )


class CallEvent(Base):
    """A turn, interruption or long silence of one call, as measured with one model version's
    scoring run (kinds and values: etl/scoring/call_metrics.py)."""

    __tablename__ = "call_events"
    __table_args__ = (
        CheckConstraint("kind IN ('turn', 'interruption', 'silence')", name="kind_valid"),
        Index("ix_call_events_call_id_model_version_id", "call_id", "model_version_id"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    call_id: Mapped[int] = mapped_column(ForeignKey("calls.id", ondelete="CASCADE"))
    model_version_id: Mapped[int] = mapped_column(ForeignKey("model_versions.id"))
    role: Mapped[str | None] = mapped_column(String(16))  # the interrupter; NULL for silence
    kind: Mapped[str] = mapped_column(String(16))
    start_s: Mapped[float] = mapped_column(Float)
    end_s: Mapped[float] = mapped_column(Float)
    value: Mapped[float | None] = mapped_column(Float)


class DailyEmotionRollup(Base):
    """Scored speech per day, queue, agent, role, emotion and model version (what
    ``analytics.daily_trends`` reads); rewritten per day by ``etl.scoring.rollup.refresh_rollup``.

    ``segments_pruned``: the day's segments were deleted (``ser db prune``); its rows are kept
    as they are and no longer recomputed.
    """

    __tablename__ = "daily_emotion_rollup"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    call_date: Mapped[dt.date] = mapped_column(Date, index=True)
    queue: Mapped[str | None] = mapped_column(String(64))
    agent_id: Mapped[str | None] = mapped_column(String(64))
    role: Mapped[str] = mapped_column(String(16))
    emotion: Mapped[str] = mapped_column(String(32))
    model_version_id: Mapped[int] = mapped_column(ForeignKey("model_versions.id"))
    calls: Mapped[int] = mapped_column(BigInteger)
    segments: Mapped[int] = mapped_column(BigInteger)
    speech_s: Mapped[float] = mapped_column(Float)
    abstained_s: Mapped[float] = mapped_column(Float)
    segments_pruned: Mapped[bool] = mapped_column(Boolean, server_default="false")


class DailyAgentRollup(Base):
    """Scored calls per day, queue, agent and model version, with the sums behind the agent
    questions (what ``analytics.agent_daily`` reads); rewritten per day by
    ``etl.scoring.rollup.refresh_rollup`` from the calls' summaries (the batch's model version,
    as ``analytics.calls`` shows them).

    ``customer_*`` columns count calls with scored customer speech (``negative_share_customer``
    not null): averages are ``customer_negative_sum / customer_calls``.
    """

    __tablename__ = "daily_agent_rollup"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    call_date: Mapped[dt.date] = mapped_column(Date, index=True)
    queue: Mapped[str | None] = mapped_column(String(64))
    agent_id: Mapped[str | None] = mapped_column(String(64))
    model_version_id: Mapped[int] = mapped_column(ForeignKey("model_versions.id"))
    calls: Mapped[int] = mapped_column(BigInteger)
    escalated_calls: Mapped[int] = mapped_column(BigInteger)
    customer_calls: Mapped[int] = mapped_column(BigInteger)
    escalated_customer_calls: Mapped[int] = mapped_column(BigInteger)
    customer_negative_sum: Mapped[float] = mapped_column(Float)
    duration_s: Mapped[float] = mapped_column(Float)


# --------------------------------------------------------------------------------------------
# Supervisors' reviews and site calibration (issue 27)
# --------------------------------------------------------------------------------------------


class CallReview(Base):
    """A supervisor's verdict on one call's escalation decision. Re-judging adds a row (the
    latest wins); rows are never updated or deleted by the product.

    The call's key, recording hash, batch date, model version and decision are copied so a
    review outlives its call row and can be matched to the same recording scored again.
    """

    __tablename__ = "call_reviews"
    __table_args__ = (
        CheckConstraint("verdict IN ('right', 'wrong')", name="verdict_valid"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    call_id: Mapped[int | None] = mapped_column(
        ForeignKey("calls.id", ondelete="SET NULL"), index=True)
    call_key: Mapped[str] = mapped_column(Text)
    call_sha256: Mapped[str | None] = mapped_column(String(64), index=True)
    batch_date: Mapped[dt.date] = mapped_column(Date)
    model_version_id: Mapped[int | None] = mapped_column(
        ForeignKey("model_versions.id", ondelete="SET NULL"))
    escalated: Mapped[bool] = mapped_column(Boolean)
    escalation_rule: Mapped[str | None] = mapped_column(String(64))
    verdict: Mapped[str] = mapped_column(String(8))
    customer_emotion: Mapped[str | None] = mapped_column(String(32))
    note: Mapped[str | None] = mapped_column(Text)
    reviewed_by: Mapped[str] = mapped_column(String(128))
    db_user: Mapped[str] = mapped_column(String(128), server_default=func.session_user())
    reviewed_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True),
                                                     server_default=_now())


class ReviewQueue(Base):
    """One draw of `ser review queue`: its scope (model version, batch dates), seed and sizes."""

    __tablename__ = "review_queues"

    id: Mapped[int] = mapped_column(primary_key=True)
    model_version_id: Mapped[int] = mapped_column(ForeignKey("model_versions.id"))
    first_date: Mapped[dt.date] = mapped_column(Date)
    last_date: Mapped[dt.date] = mapped_column(Date)
    seed: Mapped[int] = mapped_column(Integer)
    sample_size: Mapped[int] = mapped_column(Integer)
    n_escalated: Mapped[int] = mapped_column(Integer)
    n_not_escalated: Mapped[int] = mapped_column(Integer)
    created_by: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), server_default=_now())


class ReviewQueueCall(Base):
    """A call drawn into a review queue, with the probability it had of being drawn."""

    __tablename__ = "review_queue_calls"
    __table_args__ = (
        CheckConstraint("probability > 0 AND probability <= 1", name="probability_valid"),
    )

    queue_id: Mapped[int] = mapped_column(
        ForeignKey("review_queues.id", ondelete="CASCADE"), primary_key=True)
    call_id: Mapped[int] = mapped_column(ForeignKey("calls.id"), primary_key=True, index=True)
    stratum: Mapped[str] = mapped_column(String(16))  # "escalated" / "not_escalated"
    probability: Mapped[float] = mapped_column(Float)


class SiteOperatingPoint(Base):
    """An operating point chosen by `ser calibrate` on a site's reviewed calls, or (no rules) a
    revert to the model's own point by `ser calibrate --revert`; the latest row of a model
    version says which point scoring uses for it."""

    __tablename__ = "site_operating_points"

    id: Mapped[int] = mapped_column(primary_key=True)
    model_version_id: Mapped[int] = mapped_column(
        ForeignKey("model_versions.id", ondelete="CASCADE"), index=True)
    rules: Mapped[list[dict[str, Any]]] = mapped_column(JSONB)
    confidence_floor: Mapped[float] = mapped_column(Float)
    target_precision: Mapped[float] = mapped_column(Float)
    review_ids: Mapped[list[int]] = mapped_column(ARRAY(BigInteger))
    before: Mapped[dict[str, Any]] = mapped_column()
    after: Mapped[dict[str, Any]] = mapped_column()
    created_by: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), server_default=_now())
