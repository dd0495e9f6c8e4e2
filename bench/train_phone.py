"""Phone-robust training benchmark: clip-level UAR of unseen speakers, studio audio vs phone line.

Protocol (prints JSON):

- Train on RAVDESS actors 01-16, evaluate on the held-out actors 17-20 (never used to choose
  anything: hyper-parameters come from the grid search inside the training actors, as
  ``ser train`` does it).
- Models, fitted exactly as `etl.training.train` fits the final model (default family, per-speaker
  normalisation, class balance, nested actor-grouped grid search):
  ``before``: the studio default before phone-robust training (rich/studio features without
  level normalisation, recorded clips only); ``telephony_clean``: rich/telephony (level-
  normalised) on recorded clips only (ablation); ``new_default``: what ``ser train`` trains now,
  rich/telephony plus the phone-line copies (rich+phone, `etl.audio.phone_line`), normalised per
  (actor, variant).
- Conditions for the held-out clips: ``studio`` (the clips as recorded) and ``phone`` (each
  clip through `etl.synthetic.line.telephone_line` at 8 kHz: band limit, line noise, mu-law; a line
  model independent of the augmentation chain). Each held-out speaker is normalised with its
  own statistics over its clips of the condition (as ``ser predict`` does for a folder).
- Per scheme (emotion8, callcentre4, posneg): UAR (balanced accuracy) over the held-out clips.

    python bench/train_phone.py [--root /work/shared/datasets/ravdess] [--workers 2]
"""

from __future__ import annotations

import argparse
import json
import os
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

TRAIN_ACTORS = range(1, 17)
TEST_ACTORS = range(17, 21)
SCHEMES = ("emotion8", "callcentre4", "posneg")


def _old_studio_spec() -> Any:
    """rich/studio as it was before level normalisation (what studio models were trained on)."""
    from etl.features.specs import FeatureSpec, feature_spec

    new = feature_spec("rich", "studio")
    return FeatureSpec(new.name, new.channel, new.sample_rate,
                       {k: v for k, v in new.params.items() if k != "level_norm"},
                       new.feature_names, "rich-studio-before-level-norm")


def _featurise(job: tuple[int, str, bool]) -> dict[str, Any]:
    """All vectors one clip contributes (runs in a worker process)."""
    from threadpoolctl import threadpool_limits

    from etl.audio.decode import load_audio
    from etl.audio.phone_line import augment_copies
    from etl.features.extraction import extract
    from etl.features.specs import feature_spec
    from etl.synthetic.line import telephone_line

    index, path, held_out = job
    old, tel = _old_studio_spec(), feature_spec("rich", "telephony")
    phone = feature_spec("rich+phone", "telephony")
    out: dict[str, Any] = {}
    with threadpool_limits(1):
        y16, sr16 = load_audio(Path(path), sr=16000, mono=True)
        y8, sr8 = load_audio(Path(path), sr=8000, mono=True)
        out["before"] = extract(y16, sr16, old)
        out["telephony"] = extract(y8, sr8, tel)
        if held_out:
            line = telephone_line(y8, sr8, seed=index)
            out["before_phone"] = extract(line, sr8, old)  # a studio model hears the line
            out["telephony_phone"] = extract(line, sr8, tel)
        else:
            out["copies"] = np.stack([extract(c, sr8, tel) for c in augment_copies(
                y8, sr8, clip_key=index, params=phone.params["augment"])])
    return out


def _fit(X: np.ndarray, y: np.ndarray, actors: np.ndarray, keys: np.ndarray) -> Any:
    from etl.training.config import DEFAULT_SEED
    from etl.training.fitting import fit_estimator, prepare_features
    from etl.training.models import DEFAULT_ALGORITHM, get_algorithm

    Xp = prepare_features(X, keys, speaker_normalisation=True)
    estimator, chosen = fit_estimator(get_algorithm(DEFAULT_ALGORITHM), Xp, y, actors,
                                      seed=DEFAULT_SEED, balance=True, search=True)
    return estimator, chosen


def _uar(estimator: Any, X: np.ndarray, y: np.ndarray, actors: np.ndarray) -> float:
    from sklearn.metrics import balanced_accuracy_score

    from etl.training.normalise import normalise_per_speaker

    return round(float(balanced_accuracy_score(
        y, estimator.predict(normalise_per_speaker(X, actors)))), 4)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path("/work/shared/datasets/ravdess"))
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()

    from etl.features.specs import feature_spec
    from etl.training.fitting import single_threaded_blas

    started = time.perf_counter()
    files, actors, emotions, held = _clips(args.root)
    jobs = [(i, str(f), bool(h)) for i, (f, h) in enumerate(zip(files, held, strict=True))]
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        feats = list(pool.map(_featurise, jobs, chunksize=16))
    features_s = time.perf_counter() - started

    split = _Split(feats, actors, train_idx=np.flatnonzero(~held), test_idx=np.flatnonzero(held))
    fit_started = time.perf_counter()
    with single_threaded_blas(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        results = {scheme: _scheme_row(scheme, emotions, split) for scheme in SCHEMES}
    from importlib.metadata import version

    print(json.dumps({
        "bench": "train_phone",
        "protocol": "train RAVDESS actors 01-16 (grid search on actor-grouped inner folds of "
                    "those only), clip-level UAR on held-out actors 17-20; 'studio' = clips as "
                    "recorded, 'phone' = etl.synthetic.line.telephone_line at 8 kHz (band limit, line "
                    "noise, mu-law); held-out speakers normalised on their own clips",
        "models": {"before": "rich/studio without level normalisation, recorded clips "
                             "(the studio default before this change)",
                   "telephony_clean": "rich/telephony (level-normalised), recorded clips",
                   "new_default": "ser train default: rich/telephony + rich+phone copies"},
        "n_clips": len(files), "augment_chain_hash": feature_spec(
            "rich+phone", "telephony").params_hash[:12],
        "audiomentations": version("audiomentations"),
        "results": results,
        "seconds": {"features": round(features_s, 1),
                    "training": round(time.perf_counter() - fit_started, 1),
                    "total": round(time.perf_counter() - started, 1)},
        "cpus": os.cpu_count(),
    }, indent=2))


def _clips(root: Path) -> tuple[list[Path], np.ndarray, list[str], np.ndarray]:
    """``(files, actor per file, emotion per file, held out per file)`` of the RAVDESS clips
    under ``root`` by the training and the held-out actors."""
    from etl.corpora.parsers import parse_ravdess

    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in (".flac", ".wav"))
    parsed = [parse_ravdess(p) for p in files]
    actors = np.array([int(c.actor_code) for c in parsed])
    keep = np.isin(actors, [*TRAIN_ACTORS, *TEST_ACTORS])
    files, parsed, actors = ([f for f, k in zip(files, keep, strict=True) if k],
                             [c for c, k in zip(parsed, keep, strict=True) if k], actors[keep])
    return files, actors, [c.emotion for c in parsed], np.isin(actors, list(TEST_ACTORS))


@dataclass(frozen=True)
class _Split:
    """Every clip's vectors (:func:`_featurise`) and actor, and which clips train and test."""

    feats: list[dict[str, Any]]
    actors: np.ndarray
    train_idx: np.ndarray
    test_idx: np.ndarray


def _scheme_row(scheme: str, emotions: list[str], split: _Split) -> dict[str, Any]:
    """Held-out UAR of each model, studio and phone, for one label scheme."""
    from etl.corpora.labels import map_emotion

    feats, actors = split.feats, split.actors
    labels = [map_emotion(scheme, e) for e in emotions]
    classes = sorted({label for label in labels if label is not None})
    tr = np.array([i for i in split.train_idx if labels[i] is not None])
    te = np.array([i for i in split.test_idx if labels[i] is not None])
    y = np.array([classes.index(label) if label is not None else -1 for label in labels])
    row: dict[str, Any] = {"classes": classes, "n_train_clips": len(tr), "n_test_clips": len(te)}
    for name, key, test_keys in (("before", "before", ("before", "before_phone")),
                                 ("telephony_clean", "telephony",
                                  ("telephony", "telephony_phone"))):
        X = np.stack([feats[i][key] for i in tr])
        est, chosen = _fit(X, y[tr], actors[tr], actors[tr])
        row[name] = {
            "studio": _uar(est, np.stack([feats[i][test_keys[0]] for i in te]), y[te],
                           actors[te]),
            "phone": _uar(est, np.stack([feats[i][test_keys[1]] for i in te]), y[te],
                          actors[te]),
            "best_params": chosen}
    row["new_default"] = _new_default(feats, actors, y, tr=tr, te=te)
    return row


def _new_default(feats: list[dict[str, Any]], actors: np.ndarray, y: np.ndarray, *,
                 tr: np.ndarray, te: np.ndarray) -> dict[str, Any]:
    """The new default: recorded clips + their phone-line copies, normalised per (actor,
    variant); held-out UAR on studio and phone audio."""
    copies = np.stack([feats[i]["copies"] for i in tr])  # (n, copies, F)
    n_copies = copies.shape[1]
    X = np.concatenate([np.stack([feats[i]["telephony"] for i in tr]),
                        copies.transpose(1, 0, 2).reshape(-1, copies.shape[2])])
    a = np.tile(actors[tr], n_copies + 1)
    variant = np.repeat(np.arange(n_copies + 1), len(tr))
    est, chosen = _fit(X, np.tile(y[tr], n_copies + 1), a, a * 1000 + variant)
    return {
        "studio": _uar(est, np.stack([feats[i]["telephony"] for i in te]), y[te], actors[te]),
        "phone": _uar(est, np.stack([feats[i]["telephony_phone"] for i in te]), y[te],
                      actors[te]),
        "best_params": chosen, "copies_per_clip": n_copies}


if __name__ == "__main__":
    main()
