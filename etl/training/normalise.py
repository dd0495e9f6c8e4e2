"""Per-speaker feature normalisation: the main lever for recognising emotion in unseen speakers.

A speaker's voice shifts every feature (pitch level, formants, loudness, channel colour). Emotion
is mostly a *departure from that speaker's own baseline*, so z-scoring each speaker's rows with
that speaker's own mean and standard deviation removes most of the speaker identity and leaves the
emotional variation. It needs no labels, so it applies equally to a held-out test actor, to a call
channel at night, or to a folder of files passed to ``ser predict``.

A speaker with only a few rows (``ser predict clip.wav``, a call channel with two segments) cannot
be normalised against itself: one row minus its own mean is all zeros, whatever the emotion. For
such groups the statistics are shrunk toward those of the most similar training speakers (a
:class:`SpeakerPopulation` stored with the model), so a lone clip is z-scored against
similar-sounding speakers instead of against itself.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

# Floor for the per-speaker standard deviation. A feature that is (nearly) constant for one
# speaker would otherwise explode to huge z-scores. "Nearly constant" is relative to the typical
# (median) within-speaker spread of that feature; the absolute floor guards all-zero columns.
STD_FLOOR_ABS = 1e-6
STD_FLOOR_REL = 0.1

# Below this many rows a speaker's own statistics are too unreliable to normalise with alone:
# the sample std of n rows has a relative error of about 1/sqrt(2(n-1)) (27 % at n=8, 71 % at
# n=2), and a handful of clips rarely covers the emotions evenly, so the own mean is pulled toward
# whatever emotion those clips happen to carry (at n=1 it *is* the clip, erasing the signal). Such
# groups are shrunk toward training-speaker statistics when a model provides them; groups of at
# least this size (corpus actors, normal call channels) keep exactly their own statistics.
MIN_ROWS_OWN_STATS = 8
# Weight of the prior statistics in the shrinkage, in "rows": own weight is n / (n + k), so a
# single clip gets 1/9 of its own mean (essentially the prior's) and 7 rows get about half.
PRIOR_ROWS = 8
# The prior of a small group is the mean/std of the training speakers whose mean feature row is
# nearest to the group's (in units of the typical within-speaker std): voices differ in pitch
# range, formants and loudness so much that the *population* mean/std leaves a lone clip far from
# anything the model saw (measured on synthetic voices, leave-one-actor-out, single files:
# population mean + median std 0.58 accuracy, half the speakers at chance; 1-3 nearest
# speakers 0.92-0.93; the speaker's own folder 0.975). A few, not one, to smooth one odd speaker.
NEAREST_SPEAKERS = 3


@dataclass(frozen=True)
class SpeakerPopulation:
    """Per-speaker statistics of the training speakers: the prior for speakers with few rows.

    Attributes
    ----------
    means : ndarray, shape (n_speakers, n_features)
        Each training speaker's mean raw feature row.
    stds : ndarray, shape (n_speakers, n_features)
        Each training speaker's feature standard deviation (what a per-speaker z-score divides by).
    prior_rows : float
        Weight of the prior in the shrinkage, in rows (``PRIOR_ROWS`` by default).
    min_rows_own : float
        Groups with fewer rows are shrunk (``MIN_ROWS_OWN_STATS`` by default); ``inf`` shrinks
        every group, e.g. a call channel of 30 segments whose emotions are not balanced, so its
        own mean would absorb the emotion (a calm call would read half negative).
    raw_columns : int
        The last ``raw_columns`` features are left as they are by `normalise_per_speaker` (a
        voice encoder's embedding: its speaker-specific part is what tells the prior which
        training speakers are near, and z-scoring it per speaker removed emotion evidence).
    """

    means: np.ndarray
    stds: np.ndarray
    prior_rows: float = PRIOR_ROWS
    min_rows_own: float = MIN_ROWS_OWN_STATS
    raw_columns: int = 0

    @property
    def n_speakers(self) -> int:
        return int(self.means.shape[0])

    @property
    def typical_std(self) -> np.ndarray:
        """Median within-speaker std per feature, shape (n_features,)."""
        return np.median(self.stds, axis=0)

    def prior(self, group_means: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Mean and std of the ``NEAREST_SPEAKERS`` training speakers nearest each group.

        Parameters
        ----------
        group_means : ndarray, shape (n_groups, n_features)

        Returns
        -------
        (means, stds), each shape (n_groups, n_features); stds pool the variances.
        """
        scale = np.maximum(self.typical_std, STD_FLOOR_ABS)
        a, b = group_means / scale, self.means / scale
        dist = (a**2).sum(1)[:, None] - 2 * a @ b.T + (b**2).sum(1)[None, :]
        nearest = np.argsort(dist, axis=1, kind="stable")[:, :NEAREST_SPEAKERS]
        return (self.means[nearest].mean(axis=1),
                np.sqrt((self.stds[nearest] ** 2).mean(axis=1)))

    def to_json(self) -> dict[str, Any]:
        """JSON-friendly dict (6 significant digits: features are float32 anyway)."""
        def rows(a: np.ndarray) -> list[list[float]]:
            return [[float(f"{v:.6g}") for v in row] for row in a]

        out: dict[str, Any] = {"speaker_means": rows(self.means),
                               "speaker_stds": rows(self.stds)}
        if (self.prior_rows, self.min_rows_own) != (PRIOR_ROWS, MIN_ROWS_OWN_STATS):
            out["prior_rows"] = float(self.prior_rows)
            # None = every group is shrunk (JSON has no infinity)
            out["min_rows_own"] = None if np.isinf(self.min_rows_own) else self.min_rows_own
        if self.raw_columns:
            out["raw_columns"] = int(self.raw_columns)
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> SpeakerPopulation | None:
        """Inverse of :meth:`to_json`; None for missing data (models registered before it)."""
        if not data or "speaker_means" not in data or "speaker_stds" not in data:
            return None
        means = np.asarray(data["speaker_means"], np.float64)
        stds = np.asarray(data["speaker_stds"], np.float64)
        if means.shape != stds.shape or means.ndim != 2 or not len(means):
            raise ValueError(f"stored speaker statistics are malformed: means {means.shape}, "
                             f"stds {stds.shape}")
        prior_rows = float(data.get("prior_rows", PRIOR_ROWS))
        min_rows = data.get("min_rows_own", MIN_ROWS_OWN_STATS)
        if prior_rows < 0:
            raise ValueError(f"stored prior_rows must be >= 0, not {prior_rows}")
        return cls(means=means, stds=stds, prior_rows=prior_rows,
                   min_rows_own=np.inf if min_rows is None else float(min_rows),
                   raw_columns=int(data.get("raw_columns", 0)))


def speaker_population(
    X: np.ndarray, speakers: Sequence[object] | np.ndarray, *,
    prior_rows: float = PRIOR_ROWS, min_rows_own: float = MIN_ROWS_OWN_STATS,
    raw_columns: int = 0,
) -> SpeakerPopulation:
    """Per-speaker statistics of raw (un-normalised) training rows.

    Parameters
    ----------
    X : ndarray, shape (n_rows, n_features)
    speakers : sequence, length n_rows
    prior_rows, min_rows_own, raw_columns
        How groups are shrunk toward these statistics later (:class:`SpeakerPopulation`).

    Only speakers with at least ``MIN_ROWS_OWN_STATS`` rows are kept (their statistics are the
    reliable ones), unless there are none: then those with 2+ rows.

    Raises
    ------
    ValueError
        Shapes disagree, or no speaker has 2 rows (no within-speaker spread to measure).
    """
    X, inverse, counts = _grouped(X, speakers)
    means, stds = _group_stats(X, inverse, len(counts))
    keep = counts >= MIN_ROWS_OWN_STATS
    if not keep.any():
        keep = counts >= 2
    if not keep.any():
        raise ValueError("speaker statistics need at least one speaker with 2+ rows")
    if prior_rows < 0:
        raise ValueError(f"prior_rows must be >= 0, not {prior_rows}")
    return SpeakerPopulation(means=means[keep], stds=stds[keep], prior_rows=float(prior_rows),
                             min_rows_own=float(min_rows_own), raw_columns=int(raw_columns))


def normalise_per_speaker(
    X: np.ndarray,
    speakers: Sequence[object] | np.ndarray,
    *,
    population: SpeakerPopulation | None = None,
    raw_columns: int | None = None,
) -> np.ndarray:
    """Z-score each speaker's rows with that speaker's own mean and (floored) standard deviation.

    Parameters
    ----------
    X : ndarray, shape (n_rows, n_features)
        Feature rows (any float dtype).
    speakers : sequence, length n_rows
        A speaker key per row (actor id, "call 17 / customer", a folder name, ...). Rows with the
        same key are normalised together.
    population : SpeakerPopulation, optional
        Training-speaker statistics. A speaker with fewer than ``population.min_rows_own``
        rows (``MIN_ROWS_OWN_STATS`` unless the model chose otherwise) is then normalised with a
        blend of its own statistics and a prior (the ``NEAREST_SPEAKERS`` training speakers
        nearest its mean row), ``w = n / (n + population.prior_rows)``: mean
        ``w*own + (1-w)*prior`` and variance ``w*own_var + (1-w)*prior_std**2``. Without it such
        a speaker uses only its own statistics; a single row then becomes all zeros (correct but
        uninformative).
    raw_columns : int, optional
        Leave the last ``raw_columns`` features as they are; default ``population.raw_columns``
        (0 without a population).

    Returns
    -------
    ndarray, shape (n_rows, n_features), float32
        Normalised copy; ``X`` is not modified. Never contains NaN/inf for finite input.

    Raises
    ------
    ValueError
        If ``X`` is not 2-D, ``speakers`` has a different length, or ``population`` has another
        number of features.
    """
    X, inverse, counts = _grouped(X, speakers)
    if X.shape[0] == 0:
        return np.zeros(X.shape, dtype=np.float32)
    if population is not None and population.means.shape[1] != X.shape[1]:
        raise ValueError(f"speaker statistics have {population.means.shape[1]} features; X has "
                         f"{X.shape[1]} (model and feature rows do not match)")
    means, stds = _group_stats(X, inverse, len(counts))
    spread = stds[counts > 1]
    if len(spread):
        typical = np.median(spread, axis=0)
    else:  # nobody has 2 rows: the training speakers' typical spread, if known, sets the floor
        typical = population.typical_std if population is not None else np.zeros(X.shape[1])
    floor = np.maximum(STD_FLOOR_REL * typical, STD_FLOOR_ABS)
    if population is not None:
        small = counts < population.min_rows_own
        if small.any():
            prior_mean, prior_std = population.prior(means[small])
            w = (counts[small] / (counts[small] + population.prior_rows))[:, None]
            means[small] = w * means[small] + (1 - w) * prior_mean
            stds[small] = np.sqrt(w * stds[small] ** 2 + (1 - w) * prior_std**2)
    out = ((X - means[inverse]) / np.maximum(stds, floor)[inverse]).astype(np.float32)
    if raw_columns is None:
        raw_columns = population.raw_columns if population is not None else 0
    if raw_columns:
        out[:, -raw_columns:] = X[:, -raw_columns:]
    return out


def _grouped(
    X: np.ndarray, speakers: Sequence[object] | np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(X as float64, group index per row (n_rows,), rows per group (n_groups,))``."""
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2:
        raise ValueError(f"X must be 2-D (rows, features); got shape {X.shape}")
    keys = [str(k) for k in speakers]  # str: mixed key types must still compare
    if len(keys) != X.shape[0]:
        raise ValueError(f"speakers has {len(keys)} entries for {X.shape[0]} rows of X")
    if not keys:
        return X, np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    _, inverse, counts = np.unique(np.array(keys), return_inverse=True, return_counts=True)
    return X, inverse.reshape(-1), counts


def _group_stats(
    X: np.ndarray, inverse: np.ndarray, n_groups: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-group mean and (population) std, each shape (n_groups, n_features)."""
    means = np.zeros((n_groups, X.shape[1]))
    stds = np.zeros((n_groups, X.shape[1]))
    for group in range(n_groups):
        block = X[inverse == group]
        means[group] = block.mean(axis=0)
        stds[group] = block.std(axis=0)
    return means, stds
