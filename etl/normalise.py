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

# Floors for the per-speaker standard deviation. A feature that is (nearly) constant for one
# speaker would otherwise explode to huge z-scores; the relative floor ties "nearly constant" to
# the feature's scale across everything passed in, the absolute one guards all-zero columns.
STD_FLOOR_ABS = 1e-6
STD_FLOOR_REL = 1e-2


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
    keys = np.asarray(list(speakers) if not isinstance(speakers, np.ndarray) else speakers,
                      dtype=object)
    if keys.shape[0] != X.shape[0]:
        raise ValueError(f"speakers has {keys.shape[0]} entries for {X.shape[0]} rows of X")
    out = np.empty_like(X)
    if X.shape[0] == 0:
        return out.astype(np.float32)
    floor = np.maximum(STD_FLOOR_REL * X.std(axis=0), STD_FLOOR_ABS)
    # np.unique on object arrays needs comparable keys; map to strings for mixed types.
    _, inverse = np.unique(np.array([str(k) for k in keys]), return_inverse=True)
    for group in range(int(inverse.max()) + 1):
        rows = inverse == group
        block = X[rows]
        mean = block.mean(axis=0)
        std = np.maximum(block.std(axis=0), floor)
        out[rows] = (block - mean) / std
    return out.astype(np.float32)
