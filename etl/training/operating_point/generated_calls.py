"""Customer sides of generated phone calls of the training speakers, each scored as nightly
scoring scores a call by the outer fold model that never heard its speakers.

Every outer fold gets its share of the calls, made by the call generator (the scenarios, pauses,
overtalk, non-speech and phone line of ``ser calls generate``) from all the clips of that fold's
held-out speakers (also emotions the label scheme leaves out: an upset customer may sound
fearful). Pseudo-calls stitch whole-clip predictions together; real calls are cut by the VAD
into windows that straddle utterances and pauses, and on unseen speakers escalated more often
than pseudo-calls predicted.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
from sqlalchemy import text
from sqlalchemy.orm import Session
from tqdm import tqdm

from etl.scoring.config import ScoringConfig
from etl.scoring.recording import score_recording
from etl.synthetic import CallGenConfig, ClipBank, generate_calls, truly_escalated
from etl.synthetic.speech import hash_seed
from etl.training.loading import LoadedModel
from etl.training.operating_point.selection import CustomerSide

log = logging.getLogger(__name__)

CALL_SR = 8000


def generated_call_sides(session: Session, *, actors_by_fold: list[np.ndarray],
                         fold_model: Callable[[int], LoadedModel], n_calls: int,
                         minutes: float, seed: int, corpus: str | None,
                         progress: bool = False) -> list[CustomerSide]:
    """``n_calls`` customer sides spread over the folds as evenly as possible (the first folds
    first); fold ``k``'s calls are made of ``actors_by_fold[k]`` and scored by ``fold_model(k)``.
    Empty when no fold has clips of two emotions to build calls from (their audio gone)."""
    per_fold = [len(part) for part in np.array_split(np.arange(n_calls), len(actors_by_fold))]
    # the floor is chosen afterwards on the raw confidences: abstain nothing while scoring
    scoring = ScoringConfig(confidence_floor=0.0)
    sides = []
    with tempfile.TemporaryDirectory(prefix="ser-train-calls-") as tmp, tqdm(
            total=n_calls, desc="operating-point calls", unit="call", disable=not progress,
            leave=False) as bar:
        for k, (actors, n) in enumerate(zip(actors_by_fold, per_fold, strict=True)):
            if not n:
                continue
            clips = session.execute(text(
                "SELECT c.clip_name, c.actor_id, c.emotion, c.path FROM clips c "
                "WHERE c.is_current AND c.actor_id = ANY(:actors) "
                "AND (CAST(:corpus AS text) IS NULL OR c.corpus = :corpus) ORDER BY c.id"),
                {"actors": [int(a) for a in actors], "corpus": corpus}).all()
            try:
                calls = generate_calls(
                    Path(tmp) / f"fold{k}", n_calls=n, minutes=minutes,
                    bank=ClipBank.from_paths(clips, sr=CALL_SR), config=CallGenConfig(sr=CALL_SR),
                    seed=hash_seed("operating-point", seed, k))
            except ValueError as exc:  # their clips cannot make a call
                log.warning("operating-point calls: actors %s make no call (%s)", list(actors), exc)
                calls = []
            for call in calls:
                result = score_recording(call.path, model=fold_model(k), config=scoring)
                segs = [s for s in result.segments if s.role == "customer"]
                sides.append(CustomerSide(
                    speaker=call.customer_actor, scenario=call.scenario, fold=k,
                    truth=truly_escalated(call.timeline), duration_s=float(result.duration_s),
                    start=np.array([s.start_s for s in segs], dtype=np.float64),
                    end=np.array([s.end_s for s in segs], dtype=np.float64),
                    negative=np.array([s.is_negative for s in segs], dtype=bool),
                    confidence=np.array([s.confidence for s in segs], dtype=np.float64)))
            bar.update(n)
    return sides
