"""Small factories that insert realistic rows for report tests and the report benchmark.

They write what the ingest, training and nightly parts write (same tables, same conventions), with
numbers that hang together: model metrics are computed with scikit-learn from simulated fold
predictions, call summaries are computed from the inserted segments. Bulk inserts only; callers
own the transaction (nothing here commits).
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
    recall_score,
    roc_auc_score,
    roc_curve,
)
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
from etl.corpora.labels import is_negative_class, scheme_classes

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


@dataclass(frozen=True, slots=True)
class _SimulatedFolds:
    """Simulated out-of-fold predictions: true class ``y``, speaker fold, probabilities
    ``(n, n_classes)`` and predicted class of each clip."""

    y: np.ndarray
    folds: np.ndarray
    proba: np.ndarray
    pred: np.ndarray


def _simulate_folds(rows: Sequence[Any], classes: Sequence[str], *, skill: float, n_folds: int,
                    rng: np.random.Generator) -> _SimulatedFolds:
    # Map emotions onto classes like callcentre4 does (neutral -> calm); unknown -> first class.
    to_class = {c: i for i, c in enumerate(classes)}
    y = np.array([to_class.get(r.emotion, to_class.get("calm", 0)) for r in rows])
    speakers = sorted({r.actor_code for r in rows})
    fold_of_speaker = {s: i % n_folds for i, s in enumerate(speakers)}
    folds = np.array([fold_of_speaker[r.actor_code] for r in rows])
    # Scores: the true class gets a boost proportional to skill; softmax to probabilities.
    logits = rng.normal(0, 1, (len(y), len(classes)))
    logits[np.arange(len(y)), y] += 3.0 * skill
    proba = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return _SimulatedFolds(y=y, folds=folds, proba=proba, pred=proba.argmax(axis=1))


class _MetricRows:
    """``model_metrics`` rows of one model version, as they are added."""

    def __init__(self, model_version_id: int) -> None:
        self.model_version_id = model_version_id
        self.rows: list[dict[str, object]] = []

    def add(self, metric: str, value: float, *, fold: int | None = None,
            class_label: str | None = None, group: tuple[str, str] | None = None,
            extra: dict[str, object] | None = None) -> None:
        self.rows.append({"model_version_id": self.model_version_id, "metric": metric,
                          "value": float(value), "fold": fold, "class_label": class_label,
                          "group_name": group[0] if group else None,
                          "group_value": group[1] if group else None, "extra": extra})


def _score_rows(out: _MetricRows, sim: _SimulatedFolds, classes: Sequence[str], *,
                n_folds: int) -> float:
    """Per-fold and pooled scores, per-class rows, ROC and confusion; returns the pooled UAR."""
    y, pred, proba = sim.y, sim.pred, sim.proba
    labels = list(range(len(classes)))
    for f in range(n_folds):
        m = sim.folds == f
        if not m.any():
            continue
        out.add("uar", recall_score(y[m], pred[m], average="macro", labels=labels,
                                    zero_division=0), fold=f, extra={"n": int(m.sum())})
        out.add("accuracy", accuracy_score(y[m], pred[m]), fold=f)
        out.add("macro_f1", f1_score(y[m], pred[m], average="macro", labels=labels,
                                     zero_division=0), fold=f)
    uar = float(recall_score(y, pred, average="macro", labels=labels, zero_division=0))
    out.add("uar", uar, extra={"n": len(y)})
    out.add("accuracy", accuracy_score(y, pred))
    out.add("macro_f1", f1_score(y, pred, average="macro", labels=labels, zero_division=0))
    p, r, f1, support = precision_recall_fscore_support(y, pred, labels=labels, zero_division=0)
    for i, cls in enumerate(classes):
        out.add("precision", p[i], class_label=cls)
        out.add("recall", r[i], class_label=cls)
        out.add("f1", f1[i], class_label=cls, extra={"support": int(support[i])})
        fpr, tpr, _ = roc_curve(y == i, proba[:, i])
        auc = roc_auc_score(y == i, proba[:, i]) if 0 < (y == i).sum() < len(y) else 0.5
        out.add("roc_auc", auc, class_label=cls,
                extra={"fpr": [round(float(v), 4) for v in fpr],
                       "tpr": [round(float(v), 4) for v in tpr]})
    cm = confusion_matrix(y, pred, labels=labels)
    out.add("confusion", float(cm.trace()),
            extra={"labels": list(classes), "matrix": cm.tolist()})
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
# Queue-level moods make "queues that moved" meaningful: cancellations runs hot.
QUEUE_BIAS = {"cancellations": 0.8, "billing": 0.3, "tech-support": 0.2, "sales": -0.4,
              "moves": 0.0}


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


def _call_segments(call_id: int, call: dict[str, object], *, model_version_id: int,
                   classes: Sequence[str], mood: float,
                   rng: np.random.Generator) -> list[dict[str, object]]:
    """Scored windows of one call: alternating turns of 2-16 s (sometimes overlapping), cut into
    windows of at most 4 s like the scorer does; customers of an angry call grow more negative."""
    duration = float(call["duration_s"])  # type: ignore[arg-type]
    k = len(classes)
    neg_idx = [i for i, c in enumerate(classes) if is_negative_class(c)]
    calm = classes.index("calm") if "calm" in classes else 0
    anger = rng.normal(mood + QUEUE_BIAS[str(call["queue"])] - 0.3, 0.8)
    rising = anger > 1.3  # these calls get worse over time: the escalation candidates
    t, role = 0.5, "agent"
    call_segs: list[dict[str, object]] = []
    while t < duration - 1.0:
        end = min(t + float(rng.uniform(2.0, 16.0)), duration)
        progress = t / duration
        turn = rng.normal(0, 0.6, k)
        if role == "customer":
            turn[calm] += 1.0
            boost = max(anger, 0.0) * (0.5 + (2.5 * progress if rising else 0.2))
            for j in neg_idx:
                turn[j] += boost * (1.4 if classes[j] == "angry" else 0.6)
        else:
            turn[calm] += 1.6
        w0 = t
        while w0 < end - 0.3:
            w1 = min(w0 + 4.0, end)
            logits = turn + rng.normal(0, 0.5, k)
            proba = np.exp(logits) / np.exp(logits).sum()
            top = int(proba.argmax())
            call_segs.append({
                "call_id": call_id, "model_version_id": model_version_id, "role": role,
                "start_s": round(w0, 2), "end_s": round(w1, 2), "emotion": classes[top],
                "confidence": float(proba[top]), "is_negative": is_negative_class(classes[top]),
                "probabilities": {c: round(float(v), 4)
                                  for c, v in zip(classes, proba, strict=True)},
            })
            w0 = w1
        # Next turn: the other role, sometimes starting before this one ends (overtalk).
        overlap = (float(rng.uniform(0.3, 1.5)) if rng.random() < 0.15
                   else -float(rng.uniform(0.2, 1.5)))
        t = max(end - overlap, t + 0.5)
        role = "customer" if role == "agent" else "agent"
    return call_segs


STREAK_GAP_S = 2.0
# The scorer's rule layout (name, metric, op, threshold), stored in batches.options like it does.
RULES: tuple[dict[str, object], ...] = (
    {"name": "customer_negative_streak", "metric": "longest_negative_streak_s", "op": ">=",
     "threshold": 20.0, "description": "customer negative for 20 s in a row"},
    {"name": "customer_worsening", "metric": "customer_trend", "op": ">=", "threshold": 0.5,
     "description": "customer much more negative at the end than at the start"},
    {"name": "customer_negative_share", "metric": "negative_share_customer", "op": ">=",
     "threshold": 0.7, "description": "customer negative for most of their speech"},
)


def _summary(call_id: int, model_version_id: int, duration: float, segs: list[dict[str, object]],
             classes: Sequence[str]) -> dict[str, object]:
    def talk(role: str) -> float:
        return sum(float(s["end_s"]) - float(s["start_s"]) for s in segs if s["role"] == role)  # type: ignore[arg-type]

    def neg_share(role: str, lo: float = 0.0, hi: float = 1e9) -> float | None:
        rs = [s for s in segs if s["role"] == role and lo <= float(s["start_s"]) < hi]  # type: ignore[arg-type]
        total = sum(float(s["end_s"]) - float(s["start_s"]) for s in rs)  # type: ignore[arg-type]
        if total <= 0:
            return None
        return sum(float(s["end_s"]) - float(s["start_s"]) for s in rs if s["is_negative"]) / total  # type: ignore[arg-type]

    grid = np.zeros(int(duration * 10) + 1, dtype=np.int8)
    for s in segs:
        lo, hi = int(float(s["start_s"]) * 10), int(float(s["end_s"]) * 10)  # type: ignore[arg-type]
        grid[lo:hi] += 1
    best = 0.0
    run_start: float | None = None
    run_end = 0.0
    for seg in (x for x in segs if x["role"] == "customer"):
        start, end = float(seg["start_s"]), float(seg["end_s"])  # type: ignore[arg-type]
        if seg["is_negative"] and run_start is not None and start - run_end <= STREAK_GAP_S:
            run_end = end
        elif seg["is_negative"]:
            run_start, run_end = start, end
        else:
            run_start = None
        if run_start is not None:
            best = max(best, run_end - run_start)
    first = neg_share("customer", 0, duration / 3)
    last = neg_share("customer", 2 * duration / 3)
    cust = neg_share("customer")
    values = {"negative_share_customer": cust, "longest_negative_streak_s": best,
              "customer_trend": (last - first) if first is not None and last is not None else None}
    rule = reason = None
    fired = [r for r in RULES if values[str(r["metric"])] is not None
             and float(values[str(r["metric"])]) >= float(r["threshold"])]  # type: ignore[arg-type]
    if fired:
        rule = str(fired[0]["name"])
        reason = "; ".join(f"{r['metric']} = {float(values[str(r['metric'])]):.3g} >= "  # type: ignore[arg-type]
                           f"{r['threshold']:g} ({r['description']})" for r in fired)
    mix: dict[str, dict[str, float]] = {}
    for role in ("agent", "customer"):
        total = talk(role) or 1.0
        mix[role] = {c: round(sum(float(s["end_s"]) - float(s["start_s"]) for s in segs  # type: ignore[arg-type]
                                  if s["role"] == role and s["emotion"] == c) / total, 4)
                     for c in classes}
    return {
        "call_id": call_id, "model_version_id": model_version_id, "duration_s": duration,
        "talk_agent_s": talk("agent"), "talk_customer_s": talk("customer"),
        "silence_share": float((grid == 0).mean()), "overtalk_share": float((grid >= 2).mean()),
        "negative_share_agent": neg_share("agent"), "negative_share_customer": cust,
        "longest_negative_streak_s": best, "customer_negative_first_third": first,
        "customer_negative_last_third": last,
        "customer_trend": (last - first) if first is not None and last is not None else None,
        "emotion_mix": mix, "escalated": rule is not None, "escalation_rule": rule,
        "escalation_reason": reason,
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
