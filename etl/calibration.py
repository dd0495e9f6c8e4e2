"""Probability calibration and the escalation operating point of a model version.

Both are fitted at training time on out-of-fold (speaker-grouped) predictions, stored as one
JSON-ready record in ``model_versions.params["calibration"]`` and applied at scoring time.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np


def fit_calibration(oof_proba: np.ndarray, y: np.ndarray, *, classes: Sequence[str],
                    groups: np.ndarray, seed: int = 0) -> dict[str, Any]:
    """Fit calibration (and the operating point) on out-of-fold probabilities.

    Parameters
    ----------
    oof_proba : ndarray, shape (n_clips, n_classes)
        Each clip's probabilities from the fold model that did not see its speaker.
    y : ndarray, shape (n_clips,)
        Class index per clip.
    classes
        Class names in column order.
    groups : ndarray, shape (n_clips,)
        Speaker (actor) per clip.

    Returns
    -------
    dict
        JSON-ready record; ``{"method": "none"}`` until calibration is implemented.
    """
    return {"method": "none"}


def apply_calibration(record: Mapping[str, Any] | None, proba: np.ndarray) -> np.ndarray:
    """Calibrated probabilities, shape (n, n_classes); unchanged when ``record`` is None/none."""
    return proba
