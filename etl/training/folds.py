"""Outer folds: actor-grouped, class-stratified and deterministic, with a hash to compare them."""

from __future__ import annotations

import hashlib
import json
import warnings

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold

from etl.training.dataset import TrainingDataError


def make_folds(y: np.ndarray, groups: np.ndarray, *, n_folds: int, seed: int) -> np.ndarray:
    """Outer fold (0..n_folds-1) per row: actor-grouped, class-stratified, deterministic.

    Rows must be in a canonical order (``load_dataset`` sorts by clip id) so that the same data
    and seed always give the same folds.
    """
    n_actors = np.unique(groups).size
    if n_actors < n_folds:
        raise TrainingDataError(f"too few speakers: {n_actors} actor(s) for {n_folds} folds")
    splitter = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    folds = np.full(len(y), -1, dtype=np.int64)
    with warnings.catch_warnings():
        # "least populated class has fewer members than n_splits" is expected on tiny data.
        warnings.simplefilter("ignore", UserWarning)
        for k, (_, test) in enumerate(splitter.split(np.zeros(len(y)), y, groups)):
            folds[test] = k
    return folds


def folds_hash(clip_ids: np.ndarray, folds: np.ndarray) -> str:
    """sha256 of the (clip id, fold) assignment; equal hashes = identical evaluation folds."""
    pairs = sorted(zip((int(c) for c in clip_ids), (int(f) for f in folds), strict=True))
    return hashlib.sha256(json.dumps(pairs, separators=(",", ":")).encode()).hexdigest()
