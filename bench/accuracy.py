"""Speaker-independent accuracy on RAVDESS: the seed pipelines vs the project's models.

Runs the project pipeline into a scratch database (``ser ingest`` + ``ser features`` under a
temporary SER_HOME, embedded PostgreSQL), then evaluates every model on the SAME actor-grouped
5-fold split (emotion8, StratifiedGroupKFold by actor, seed 0; folds hash printed):

- ``seed_mlp``: the blog posts' 180 features (40 MFCC + 12 chroma + 128 mel means, feature set
  ``seed180``) and ``MLPClassifier(hidden_layer_sizes=(200,), learning_rate="adaptive",
  max_iter=400)``, unscaled, as in the posts;
- ``seed_voting_mlp_xgb``: seed180 and a soft vote of that MLP and a default XGBoost;
- the project's families (etl/training/models.py) on the ``rich`` feature set, with and without
  per-speaker normalisation, through ``etl.training.train.cross_validate`` (the code ``ser train`` runs;
  grid search nested inside the training folds, on actor-grouped inner folds).

The seed pipelines' random-split score is also printed as a labelled diagnostic to show how much
speaker leakage inflates it. Prints one JSON document.

Usage: ``python bench/accuracy.py [--data DIR] [--keep DIR] [--families a,b] [--no-search-for
xgboost,voting]``
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.scratch import scratch_home

SER = str(Path(sys.executable).with_name("ser"))


def run_pipeline(data: Path, env: dict[str, str]) -> dict[str, float]:
    """ingest + features (rich, seed180) through the CLI in ``env`` (the scratch home's);
    returns wall seconds per step."""
    steps = {
        "ingest": [SER, "ingest", "ravdess", str(data), "--json"],
        "features_rich": [SER, "features", "--set", "rich", "--no-prefect", "--json"],
        "features_seed180": [SER, "features", "--set", "seed180", "--no-prefect", "--json"],
    }
    seconds: dict[str, float] = {}
    for name, cmd in steps.items():
        start = time.perf_counter()
        done = subprocess.run(cmd, check=False, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"{name} failed: {done.stderr.strip()[-2000:]}")
        seconds[name] = round(time.perf_counter() - start, 1)
    return seconds


def seed_mlp(seed: int) -> Any:
    from sklearn.neural_network import MLPClassifier

    return MLPClassifier(hidden_layer_sizes=(200,), learning_rate="adaptive", max_iter=400,
                         random_state=seed)


def seed_voting(seed: int) -> Any:
    from sklearn.ensemble import VotingClassifier
    from xgboost import XGBClassifier

    return VotingClassifier([("mlp", seed_mlp(seed)),
                             ("xgb", XGBClassifier(n_jobs=2, random_state=seed))], voting="soft")


def plain_cv(make: Any, X: np.ndarray, y: np.ndarray, folds: np.ndarray, seed: int) -> list[float]:
    """Per-fold UAR of an estimator factory on precomputed folds (no search)."""
    from sklearn.metrics import balanced_accuracy_score

    scores = []
    for k in range(int(folds.max()) + 1):
        train, test = folds != k, folds == k
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = make(seed).fit(X[train], y[train])
        scores.append(float(balanced_accuracy_score(y[test], model.predict(X[test]))))
    return scores


def random_split_uar(make: Any, X: np.ndarray, y: np.ndarray, seed: int) -> float:
    """The posts' kind of score: random stratified 5-fold (speakers leak across folds)."""
    from sklearn.model_selection import StratifiedKFold

    folds = np.zeros(len(y), dtype=int)
    for k, (_, test) in enumerate(StratifiedKFold(5, shuffle=True, random_state=seed).split(X, y)):
        folds[test] = k
    return float(np.mean(plain_cv(make, X, y, folds, seed)))


def summarise(name: str, fold_uars: list[float], seconds: float, **extra: Any) -> dict[str, Any]:
    row = {"model": name, "uar_mean": round(float(np.mean(fold_uars)), 4),
           "uar_std": round(float(np.std(fold_uars)), 4),
           "fold_uar": [round(u, 4) for u in fold_uars], "seconds": round(seconds, 1), **extra}
    print(f"{name:<34} UAR {row['uar_mean']:.3f} ± {row['uar_std']:.3f}  ({seconds:.0f} s)",
          file=sys.stderr, flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=Path("/work/shared/datasets/ravdess"))
    parser.add_argument("--keep", type=Path, default=None,
                        help="use this folder as the scratch space and keep it (a later run "
                             "reuses its features)")
    parser.add_argument("--families", default="logreg,svm,knn,mlp,rf,xgboost,voting")
    parser.add_argument("--no-search-for", default="xgboost,voting",
                        help="Families evaluated with fixed parameters (search is slow on 2 cores).")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    with scratch_home(args.keep, prefix="ser-bench-accuracy-") as (_scratch, env):
        evaluate(args, env)


def evaluate(args: argparse.Namespace, env: dict[str, str]) -> None:
    """Build features through the project pipeline in the scratch home (``env``), then score
    every model."""
    pipeline_seconds = run_pipeline(args.data, env)

    from etl.training.fitting import single_threaded_blas
    from etl.training.folds import folds_hash, make_folds

    rich, seed = _datasets()
    folds = make_folds(rich.y, rich.groups, n_folds=5, seed=args.seed)
    with single_threaded_blas():
        results = [*_seed_rows(seed, folds, seed=args.seed), *_project_rows(rich, folds, args)]
    project = [r for r in results if not r["model"].startswith("seed_")]
    best = max(project, key=lambda r: r["uar_mean"])
    print(json.dumps({
        "benchmark": "speaker-independent emotion8 UAR on RAVDESS",
        "data": str(args.data), "n_clips": len(rich.y), "n_actors": rich.n_actors,
        "classes": rich.classes, "folds": "StratifiedGroupKFold(5, shuffle, seed) by actor",
        "seed": args.seed, "folds_sha256": folds_hash(rich.clip_ids, folds),
        "pipeline_seconds": pipeline_seconds, "feature_set_ids": {
            "rich": rich.feature_set_id, "seed180": seed.feature_set_id},
        "results": results,
        "best_project_model": {"model": best["model"], "uar_mean": best["uar_mean"],
                               "uar_std": best["uar_std"], "target": 0.60,
                               "meets_target": best["uar_mean"] >= 0.60},
    }, indent=2))


def _datasets() -> tuple[Any, Any]:
    """The emotion8 datasets ``(rich, seed180)`` of the scratch database, on the same clips."""
    from db.engine import cached_engine, session_scope
    from etl.features.specs import feature_spec
    from etl.features.store import ensure_feature_set
    from etl.training.dataset import load_dataset
    from flows.database import database_url

    with session_scope(cached_engine(database_url())) as session:
        rich = load_dataset(session, label_scheme="emotion8",
                            feature_set_id=ensure_feature_set(session, feature_spec("rich")))
        seed = load_dataset(session, label_scheme="emotion8",
                            feature_set_id=ensure_feature_set(session, feature_spec("seed180")))
    if not np.array_equal(rich.clip_ids, seed.clip_ids):
        raise SystemExit("rich and seed180 features cover different clips; rerun features")
    return rich, seed


def _seed_rows(data: Any, folds: np.ndarray, *, seed: int) -> list[dict[str, Any]]:
    """The seed pipelines on seed180 (the MLP also on a random split, as a diagnostic)."""
    start = time.perf_counter()
    scores = plain_cv(seed_mlp, data.X, data.y, folds, seed)
    mlp = summarise("seed_mlp (seed180)", scores, time.perf_counter() - start,
                    diagnostic_random_split_uar=round(random_split_uar(seed_mlp, data.X, data.y,
                                                                       seed), 4))
    start = time.perf_counter()
    scores = plain_cv(seed_voting, data.X, data.y, folds, seed)
    return [mlp, summarise("seed_voting_mlp_xgb (seed180)", scores, time.perf_counter() - start)]


def _project_rows(rich: Any, folds: np.ndarray, args: argparse.Namespace) -> list[dict[str, Any]]:
    """Each of ``args.families`` on rich, without and with per-speaker normalisation, through
    ``cross_validate`` (the code ``ser train`` runs)."""
    from sklearn.metrics import balanced_accuracy_score

    from etl.training.config import TrainConfig
    from etl.training.fitting import cross_validate

    no_search = set(args.no_search_for.split(",")) if args.no_search_for else set()
    rows = []
    for family in args.families.split(","):
        for norm in (False, True):
            config = TrainConfig(algorithm=family, label_scheme="emotion8",
                                 speaker_normalisation=norm, seed=args.seed,
                                 search=family not in no_search, feature_importance=False)
            start = time.perf_counter()
            cv = cross_validate(rich, config, folds)
            fold_uars = [float(balanced_accuracy_score(
                rich.y[folds == k], cv.proba[folds == k].argmax(1))) for k in range(5)]
            rows.append(summarise(
                f"{family} (rich{', speaker-norm' if norm else ''})", fold_uars,
                time.perf_counter() - start, search=config.search, fold_params=cv.fold_params))
    return rows


if __name__ == "__main__":
    main()
