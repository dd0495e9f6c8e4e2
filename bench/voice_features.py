"""Does the voice encoder add evidence? Speaker-independent RAVDESS clips, with and without it.

Protocol (the one docs/features.md's table of candidate features uses):

- RAVDESS speech, actors 01-20 (byte-identical duplicates dropped), emotion8 labels.
- Two audio conditions: ``clean`` (the studio channel, 16 kHz) and ``phone`` (the telephony
  channel: 8 kHz, 300-3400 Hz, then a G.711 mu-law round trip).
- Features through the product's own extraction (``etl.features.extraction.extract``) of the
  ``richvoice`` set, whose first columns are the ``rich`` set: ``rich`` = those columns,
  ``voice`` = the 256 encoder columns, ``rich+voice`` = all.
- Logistic regression (balanced classes, C (0.03 or 0.3) chosen by an inner actor-grouped 3-fold search on the
  training speakers only) on rows z-scored per speaker.
- ``holdout``: train actors 01-16, test 17-20, UAR. ``cv``: 5 folds grouped by actor over 01-20
  (StratifiedGroupKFold, seed 0), mean UAR and the per-fold UARs.
- ``grouped``: a test speaker is normalised over all its clips; ``one_clip``: each test clip is its
  own group, shrunk toward the training speakers' statistics (100 prior rows, as calls are).
- ``voice_raw``: the voice columns are left as the encoder gives them (not speaker-normalised).

Features are cached per condition in ``--cache`` (keyed by the feature set's params hash).

Usage: python bench/voice_features.py [--ravdess PATH] [--cache DIR] [--workers 2]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DEFAULT_RAVDESS = ROOT.parent / "shared" / "datasets" / "ravdess"
TRAIN, TEST = range(1, 17), range(17, 21)
CONDITIONS = {"clean": "studio", "phone": "telephony"}
C_GRID = (0.03, 0.3)


def _clips(root: Path) -> list[tuple[Path, int, str]]:
    from etl.corpora.parsers import ClipNameError, parse_ravdess

    seen: set[str] = set()
    out = []
    for path in sorted(root.glob("Actor_*/*.flac")):
        try:
            parsed = parse_ravdess(path)
        except ClipNameError:
            continue
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if digest in seen:
            continue
        seen.add(digest)
        out.append((path, int(parsed.actor_code), parsed.emotion))
    return out


def _extract_one(item: tuple[str, str]) -> np.ndarray:
    from threadpoolctl import threadpool_limits

    from etl.audio.decode import load_audio
    from etl.audio.phone_line import g711_roundtrip
    from etl.audio.telephony import TELEPHONY_RATE
    from etl.features.extraction import extract, feature_spec

    path, channel = item
    spec = feature_spec("richvoice", channel)
    with threadpool_limits(1):
        if channel == "telephony":
            from etl.audio.decode import to_telephony

            y, sr = load_audio(Path(path), sr=None, mono=True)
            y8 = g711_roundtrip(to_telephony(y, sr)[0])
            return extract(y8, TELEPHONY_RATE, spec)
        y, sr = load_audio(Path(path), sr=spec.sample_rate, mono=True)
        return extract(y, sr, spec)


def features(clips: list[tuple[Path, int, str]], channel: str, *, cache: Path,
             workers: int) -> tuple[np.ndarray, float]:
    from etl.features.extraction import feature_spec

    spec = feature_spec("richvoice", channel)
    key = hashlib.sha256((spec.params_hash + "".join(str(c[0]) for c in clips)).encode())
    file = cache / f"voice_features_{channel}_{key.hexdigest()[:16]}.npy"
    if file.exists():
        return np.load(file), 0.0
    start = time.perf_counter()
    with ProcessPoolExecutor(workers) as pool:
        X = np.stack(list(pool.map(_extract_one, [(str(p), channel) for p, _, _ in clips],
                                   chunksize=8)))
    seconds = time.perf_counter() - start
    cache.mkdir(parents=True, exist_ok=True)
    np.save(file, X)
    return X, seconds


def _normalise(X: np.ndarray, speakers: np.ndarray, train: np.ndarray, *, one_clip: bool,
               raw_cols: slice | None) -> np.ndarray:
    from etl.training.normalise import normalise_per_speaker, speaker_population

    out = np.empty_like(X, dtype=np.float32)
    out[train] = normalise_per_speaker(X[train], speakers[train])
    test = ~train
    if one_clip:
        pop = speaker_population(X[train], speakers[train], prior_rows=100.0,
                                 min_rows_own=float("inf"))
        out[test] = normalise_per_speaker(X[test], np.arange(test.sum()), population=pop)
    else:
        out[test] = normalise_per_speaker(X[test], speakers[test])
    if raw_cols is not None:  # the encoder's columns as they come, scaled by the training spread
        raw = X[:, raw_cols]
        mu, sd = raw[train].mean(0), raw[train].std(0) + 1e-6
        out[:, raw_cols] = (raw - mu) / sd
    return out


def _fit_predict(Xtr: np.ndarray, ytr: np.ndarray, gtr: np.ndarray, Xte: np.ndarray) -> np.ndarray:
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import balanced_accuracy_score
    from sklearn.model_selection import GroupKFold

    def model(c: float) -> LogisticRegression:
        return LogisticRegression(C=c, max_iter=3000, class_weight="balanced")

    best, best_c = -1.0, C_GRID[0]
    for c in C_GRID:
        scores = []
        for tr, va in GroupKFold(3).split(Xtr, ytr, gtr):
            scores.append(balanced_accuracy_score(ytr[va], model(c).fit(Xtr[tr], ytr[tr])
                                                  .predict(Xtr[va])))
        if np.mean(scores) > best:
            best, best_c = float(np.mean(scores)), c
    return model(best_c).fit(Xtr, ytr).predict(Xte)


def evaluate(X: np.ndarray, y: np.ndarray, actors: np.ndarray, cols: np.ndarray, *,
             one_clip: bool, raw_cols: slice | None) -> dict[str, Any]:
    from sklearn.metrics import balanced_accuracy_score
    from sklearn.model_selection import StratifiedGroupKFold

    def run(train: np.ndarray) -> float:
        Z = _normalise(X, actors, train, one_clip=one_clip, raw_cols=raw_cols)[:, cols]
        pred = _fit_predict(Z[train], y[train], actors[train], Z[~train])
        return float(balanced_accuracy_score(y[~train], pred))

    holdout = run(np.isin(actors, list(TRAIN)))
    folds = [run(np.isin(np.arange(len(y)), tr))
             for tr, _ in StratifiedGroupKFold(5, shuffle=True, random_state=0).split(X, y, actors)]
    return {"holdout_uar": round(holdout, 3), "cv_uar": round(float(np.mean(folds)), 3),
            "cv_folds": [round(f, 3) for f in folds]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ravdess", type=Path, default=DEFAULT_RAVDESS)
    parser.add_argument("--cache", type=Path, default=Path("/tmp/ser-bench-cache"))
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--conditions", default="clean,phone")
    parser.add_argument("--step-frames", type=int, default=None,
                        help="patch etl.features.voice.params.PARTIAL_STEP_FRAMES for this run")
    parser.add_argument("--max-partials", type=int, default=None,
                        help="patch etl.features.voice.MAX_PARTIALS for this run")
    parser.add_argument("--sets", default="rich,voice,rich+voice,rich+voice_raw")
    args = parser.parse_args()
    import etl.features.voice.params as voice_module

    if args.step_frames is not None:
        voice_module.PARTIAL_STEP_FRAMES = args.step_frames
    if args.max_partials is not None:
        voice_module.MAX_PARTIALS = args.max_partials

    from etl.features.extraction import feature_spec
    from etl.features.specs import voice_columns

    clips = _clips(args.ravdess)
    actors = np.array([a for _, a, _ in clips])
    y = np.array([e for _, _, e in clips])
    report: dict[str, Any] = {
        "protocol": "RAVDESS actors 01-20 speech, emotion8, speaker-independent: holdout = train "
                    "01-16 / test 17-20; cv = 5 actor-grouped folds over 01-20 (seed 0); "
                    "logistic regression, C by inner actor-grouped search on training speakers; "
                    "per-clip UAR",
        "clips": len(clips), "encoder": voice_module.encoder_params(), "results": {}}
    for condition in args.conditions.split(","):
        channel = CONDITIONS[condition]
        X, seconds = features(clips, channel, cache=args.cache, workers=args.workers)
        voice = voice_columns(feature_spec("richvoice", channel))
        all_cols = np.arange(X.shape[1])
        sets = {"rich": all_cols[: voice.start], "voice": all_cols[voice],
                "rich+voice": all_cols}
        rows: dict[str, Any] = {"extract_seconds": round(seconds, 1)}
        wanted = args.sets.split(",")
        for name, cols in sets.items():
            if name not in wanted:
                continue
            for mode in ("grouped", "one_clip"):
                rows[f"{name}/{mode}"] = evaluate(X, y, actors, cols, one_clip=mode == "one_clip",
                                                  raw_cols=None)
                print(json.dumps({condition: {f"{name}/{mode}": rows[f"{name}/{mode}"]}}),
                      file=sys.stderr, flush=True)
        if "rich+voice_raw" in wanted:
            for mode in ("grouped", "one_clip"):
                rows[f"rich+voice_raw/{mode}"] = evaluate(X, y, actors, all_cols,
                                                          one_clip=mode == "one_clip",
                                                          raw_cols=voice)
        report["results"][condition] = rows
        print(json.dumps({condition: rows}), file=sys.stderr, flush=True)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
