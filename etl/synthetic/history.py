"""Small factories that insert realistic rows for report tests and the report benchmark.

They write what the ingest, training and nightly parts write (same tables, same conventions), with
numbers that hang together: model metrics are computed with scikit-learn from simulated fold
predictions, call summaries are computed from the inserted segments. Bulk inserts only; callers
own the transaction (nothing here commits).

The numbers inserted are simulated without a session, in two modules of their own:
``fold_metrics`` (a model version's cross-validation metric rows) and ``scored_calls`` (a
call's scored windows and its summary under the scorer's escalation rules).
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.metrics import recall_score
from sqlalchemy import func, insert, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import Session

from db.models import (
    Actor,
    Batch,
    Call,
    CallSegment,
    CallSummary,
    Clip,
    FeatureSet,
    ModelAlias,
    ModelMetric,
    ModelVersion,
    RegisteredModel,
)
from etl.corpora.demographics import CREMAD_RACES, age_band
from etl.corpora.labels import scheme_classes
from etl.synthetic.fold_metrics import _MetricRows, _score_rows, _simulate_folds
from etl.synthetic.scored_calls import RULES, STREAK_GAP_S, _call_segments, _summary

CALLCENTRE_CLASSES = tuple(scheme_classes("callcentre4"))
QUEUES = ("billing", "cancellations", "tech-support", "sales", "moves")


def _sha(*parts: object) -> str:
    return hashlib.sha256(repr(parts).encode()).hexdigest()


# --------------------------------------------------------------------------------------------
# Corpus
# --------------------------------------------------------------------------------------------


def make_corpus(
    session: Session,
    *,
    corpus: str = "crema-d",
    n_actors: int = 12,
    emotions: Sequence[str] = ("angry", "happy", "neutral", "sad", "calm"),
    clips_per_emotion: int = 3,
    seed: int = 0,
) -> list[int]:
    """Actors with CREMA-D-style demographics and their clips; returns clip ids."""
    rng = np.random.default_rng(seed)
    actors = [
        {
            "corpus": corpus,
            "actor_code": f"{1001 + a}",
            "sex": "female" if a % 2 else "male",
            "age": int(rng.integers(20, 70)),
            "race": CREMAD_RACES[int(rng.integers(len(CREMAD_RACES)))],
            "ethnicity": "Hispanic" if rng.random() < 0.2 else "Not Hispanic",
            "demographics_source": "VideoDemographics.csv",
        }
        for a in range(n_actors)
    ]
    actor_ids = session.execute(insert(Actor).returning(Actor.id), actors).scalars().all()
    clips = []
    for actor_id, actor in zip(actor_ids, actors, strict=True):
        for emotion in emotions:
            for k in range(clips_per_emotion):
                name = f"{actor['actor_code']}_IEO_{emotion[:3].upper()}_X{k}.wav"
                clips.append({
                    "corpus": corpus, "path": f"/corpora/{corpus}/{name}", "clip_name": name,
                    "sha256": _sha(corpus, name), "actor_id": actor_id, "emotion": emotion,
                    "emotion_code": emotion[:3].upper(), "label_source": "filename",
                    "sample_rate": 16000, "channels": 1, "frames": 40000, "duration_s": 2.5,
                    "size_bytes": 80044, "audio_format": "WAV",
                })
    return list(session.execute(insert(Clip).returning(Clip.id), clips).scalars().all())


def make_feature_set(session: Session, *, name: str = "rich", channel: str = "telephony") -> int:
    existing = session.execute(
        select(FeatureSet.id).where(FeatureSet.name == name, FeatureSet.channel == channel)
    ).scalar()
    if existing is not None:
        return int(existing)
    names = [f"mfcc{i}_mean" for i in range(13)] + ["f0_mean", "f0_std", "rms_mean", "zcr_mean",
                                                    "spectral_centroid_mean", "hnr_mean"]
    return int(session.execute(
        insert(FeatureSet).returning(FeatureSet.id),
        {"name": name, "channel": channel, "version": 1, "feature_names": names,
         "params": {"sr": 8000}, "params_hash": _sha(name, channel)},
    ).scalar_one())


# --------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------


def make_model_version(
    session: Session,
    *,
    clip_ids: Sequence[int],
    feature_set_id: int,
    name: str = "callcentre",
    classes: Sequence[str] = CALLCENTRE_CLASSES,
    label_scheme: str = "callcentre4",
    skill: float = 0.7,
    n_folds: int = 5,
    seed: int = 0,
    with_metrics: bool = True,
) -> int:
    """A registered model version plus metric rows computed from simulated CV predictions."""
    rm_id = session.execute(select(RegisteredModel.id).where(RegisteredModel.name == name)).scalar()
    if rm_id is None:
        rm_id = session.execute(
            insert(RegisteredModel).returning(RegisteredModel.id), {"name": name}
        ).scalar_one()
    version = (session.execute(
        select(func.max(ModelVersion.version)).where(ModelVersion.registered_model_id == rm_id)
    ).scalar() or 0) + 1
    mv_id = int(session.execute(insert(ModelVersion).returning(ModelVersion.id), {
        "registered_model_id": rm_id, "version": version, "algorithm": "xgboost",
        "params": {"n_estimators": 200, "max_depth": 4}, "feature_set_id": feature_set_id,
        "label_scheme": label_scheme, "classes": list(classes), "speaker_normalisation": True,
        "training_clip_ids": list(clip_ids), "training_set_sha256": _sha(tuple(clip_ids)),
        "folds_sha256": _sha("folds", seed), "seed": seed, "code_version": "test",
        "cv_uar": None, "artifact_format": "xgboost-ubj", "artifact": b"\x00",
        "artifact_sha256": _sha(b"\x00"),
    }).scalar_one())
    if with_metrics:
        uar = insert_metrics(session, model_version_id=mv_id, clip_ids=clip_ids, classes=classes,
                             feature_set_id=feature_set_id, skill=skill, n_folds=n_folds, seed=seed)
        session.execute(ModelVersion.__table__.update().where(ModelVersion.id == mv_id)
                        .values(cv_uar=uar))
    return mv_id


def insert_metrics(
    session: Session,
    *,
    model_version_id: int,
    clip_ids: Sequence[int],
    classes: Sequence[str],
    feature_set_id: int,
    skill: float = 0.7,
    n_folds: int = 5,
    seed: int = 0,
) -> float:
    """Metric rows in the training part's layout; returns the pooled UAR."""
    rng = np.random.default_rng(seed)
    rows = session.execute(
        select(Clip.id, Clip.emotion, Actor.actor_code, Actor.sex, Actor.age, Actor.race)
        .join(Actor, Actor.id == Clip.actor_id, isouter=True).where(Clip.id.in_(list(clip_ids)))
    ).all()
    sim = _simulate_folds(rows, classes, skill=skill, n_folds=n_folds, rng=rng)
    out = _MetricRows(model_version_id)
    uar = _score_rows(out, sim, classes, n_folds=n_folds)
    groups = {
        "sex": [r.sex or "unknown" for r in rows],
        "age_band": [age_band(r.age) or "unknown" for r in rows],
        "race": [r.race or "unknown" for r in rows],
    }
    labels = list(range(len(classes)))
    for gname, values in groups.items():
        arr = np.array(values)
        for gval in sorted(set(values)):
            m = arr == gval
            out.add("uar", recall_score(sim.y[m], sim.pred[m], average="macro", labels=labels,
                                        zero_division=0),
                    group=(gname, gval), extra={"n": int(m.sum())})
    names = session.execute(
        select(FeatureSet.feature_names).where(FeatureSet.id == feature_set_id)
    ).scalar_one()
    importances = rng.dirichlet(np.ones(len(names)) * 0.6)
    for fname, value in zip(names, importances, strict=True):
        out.add("feature_importance", value, extra={"feature": fname})
    session.execute(insert(ModelMetric), out.rows)
    return uar


def promote(session: Session, model_version_id: int, *, alias: str = "production") -> None:
    stmt = pg_insert(ModelAlias).values(alias=alias, model_version_id=model_version_id)
    session.execute(stmt.on_conflict_do_update(
        index_elements=[ModelAlias.alias], set_={"model_version_id": model_version_id}))


# --------------------------------------------------------------------------------------------
# Nightly batches
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BatchIds:
    batch_id: int
    call_ids: list[int]


def make_batch(
    session: Session,
    *,
    model_version_id: int,
    batch_date: dt.date,
    n_calls: int = 40,
    seed: int = 0,
    failure_rate: float = 0.03,
    mood: float = 0.0,
    classes: Sequence[str] = CALLCENTRE_CLASSES,
    call_names: Sequence[str] | None = None,
    min_duration_s: float = 60.0,
    max_duration_s: float = 420.0,
) -> BatchIds:
    """One batch of scored calls: calls, segments (both roles) and summaries.

    ``mood`` shifts how negative customers are (history days with different moods make trends).
    ``call_names`` overrides the first call keys (for escaping tests).
    """
    rng = np.random.default_rng(seed)
    source = f"/srv/inbox/{batch_date.isoformat()}"
    batch_id = int(session.execute(insert(Batch).returning(Batch.id), {
        "batch_date": batch_date, "source_path": source, "model_version_id": model_version_id,
        "status": "done", "n_calls": n_calls,
        "options": {"rules": [{k: v for k, v in r.items() if k != "description"} for r in RULES],
                    "streak_gap_s": STREAK_GAP_S},
        "started_at": dt.datetime.combine(batch_date, dt.time(2, 0), tzinfo=dt.UTC),
        "finished_at": dt.datetime.combine(batch_date, dt.time(2, 9), tzinfo=dt.UTC),
    }).scalar_one())
    failed = rng.random(n_calls) < failure_rate
    durations = rng.uniform(min_duration_s, max_duration_s, n_calls)
    calls = [_call_row(batch_id, batch_date, i, source=source, duration_s=float(durations[i]),
                       failed=bool(failed[i]), call_names=call_names, rng=rng)
             for i in range(n_calls)]
    call_ids = list(session.execute(insert(Call).returning(Call.id), calls).scalars().all())
    segments: list[dict[str, object]] = []
    summaries: list[dict[str, object]] = []
    for call_id, call, is_failed in zip(call_ids, calls, failed, strict=True):
        if is_failed:
            continue
        call_segs = _call_segments(call_id, call, model_version_id=model_version_id,
                                   classes=classes, mood=mood, rng=rng)
        segments.extend(call_segs)
        summaries.append(_summary(call_id, model_version_id, float(call["duration_s"]),  # type: ignore[arg-type]
                                  call_segs, classes))
    if segments:
        session.execute(insert(CallSegment), segments)
    if summaries:
        session.execute(insert(CallSummary), summaries)
    session.execute(Batch.__table__.update().where(Batch.id == batch_id).values(
        n_scored=len(summaries), n_failed=int(failed.sum()),
        n_escalations=sum(1 for s in summaries if s["escalated"]),
        audio_seconds=float(durations.sum()), status="done"))
    return BatchIds(batch_id, call_ids)


AGENTS = tuple(f"agent-{i:03d}" for i in range(1, 41))
FAILURE_REASONS = ("audio is silent in both channels",
                   "file is truncated (header says 312 s, 41 s read)",
                   "unsupported channel layout: 1 channel, expected 2")


def _call_row(batch_id: int, batch_date: dt.date, i: int, *, source: str, duration_s: float,
              failed: bool, call_names: Sequence[str] | None,
              rng: np.random.Generator) -> dict[str, object]:
    """The ``calls`` row of call ``i`` of a batch (``call_names`` override the first keys)."""
    key = (call_names[i] if call_names and i < len(call_names)
           else f"{batch_date:%Y%m%d}-{i:05d}.wav")
    start = dt.datetime.combine(batch_date - dt.timedelta(days=1), dt.time(8, 0), tzinfo=dt.UTC)
    return {
        "batch_id": batch_id, "call_key": key, "path": f"{source}/{key}",
        "sha256": _sha(batch_date, i), "agent_id": AGENTS[int(rng.integers(len(AGENTS)))],
        "queue": QUEUES[int(rng.integers(len(QUEUES)))],
        "started_at": start + dt.timedelta(seconds=int(rng.integers(0, 10 * 3600))),
        "channel_roles": {"0": "agent", "1": "customer"}, "sample_rate": 8000, "channels": 2,
        "duration_s": duration_s, "status": "failed" if failed else "scored",
        "error": FAILURE_REASONS[int(rng.integers(len(FAILURE_REASONS)))] if failed else None,
    }


def make_history(
    session: Session,
    *,
    model_version_id: int,
    last_date: dt.date,
    days: int = 30,
    n_calls: int = 12,
    seed: int = 100,
) -> None:
    """Small batches for the ``days`` nights before ``last_date`` (trend baselines)."""
    for d in range(days, 0, -1):
        make_batch(session, model_version_id=model_version_id,
                   batch_date=last_date - dt.timedelta(days=d), n_calls=n_calls, seed=seed + d,
                   mood=-0.3 + 0.01 * d)
