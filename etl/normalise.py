"""Per-speaker feature normalisation: the main lever for recognising emotion in unseen speakers.

A speaker's voice shifts every feature (pitch level, formants, loudness, channel colour). Emotion
is mostly a *departure from that speaker's own baseline*, so z-scoring each speaker's rows with
that speaker's own mean and standard deviation removes most of the speaker identity and leaves the
emotional variation. It needs no labels, so it applies equally to a held-out test actor, to a call
channel at night, or to a folder of files passed to ``ser predict``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

# Floor for the per-speaker standard deviation. A feature that is (nearly) constant for one
# speaker would otherwise explode to huge z-scores. "Nearly constant" is relative to the typical
# (median) within-speaker spread of that feature; the absolute floor guards all-zero columns.
STD_FLOOR_ABS = 1e-6
STD_FLOOR_REL = 0.1


def normalise_per_speaker(
    X: np.ndarray,
    speakers: Sequence[object] | np.ndarray,
) -> np.ndarray:
    """Z-score each speaker's rows with that speaker's own mean and (floored) standard deviation.

    Parameters
    ----------
    X : ndarray, shape (n_rows, n_features)
        Feature rows (any float dtype).
    speakers : sequence, length n_rows
        A speaker key per row (actor id, "call 17 / customer", a folder name, ...). Rows with the
        same key are normalised together.

    A speaker with a single row becomes all zeros (its own mean): correct but uninformative, so
    callers should pass several clips (or segments) per speaker.

    Returns
    -------
    ndarray, shape (n_rows, n_features), float32
        Normalised copy; ``X`` is not modified. Never contains NaN/inf for finite input.

    Raises
    ------
    ValueError
        If ``X`` is not 2-D or ``speakers`` has a different length.
    """
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2:
        raise ValueError(f"X must be 2-D (rows, features); got shape {X.shape}")
    keys = [str(k) for k in speakers]  # str: mixed key types must still compare
    if len(keys) != X.shape[0]:
        raise ValueError(f"speakers has {len(keys)} entries for {X.shape[0]} rows of X")
    if X.shape[0] == 0:
        return np.zeros(X.shape, dtype=np.float32)
    _, inverse = np.unique(np.array(keys), return_inverse=True)
    n_groups = int(inverse.max()) + 1
    means = np.zeros((n_groups, X.shape[1]))
    stds = np.zeros((n_groups, X.shape[1]))
    for group in range(n_groups):
        block = X[inverse == group]
        means[group] = block.mean(axis=0)
        stds[group] = block.std(axis=0)
    spread = stds[np.bincount(inverse, minlength=n_groups) > 1]
    typical = np.median(spread, axis=0) if len(spread) else np.zeros(X.shape[1])
    floor = np.maximum(STD_FLOOR_REL * typical, STD_FLOOR_ABS)
    out = (X - means[inverse]) / np.maximum(stds, floor)[inverse]
    return out.astype(np.float32)
