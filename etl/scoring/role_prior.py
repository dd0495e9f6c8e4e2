"""How often a role's speech is negative, applied to its segments' probabilities.

Models are fitted class-balanced (every class weighs the same), so their probabilities assume
half of emotion8's classes, negative ones included, are as likely as the rest. An agent's
speech is not: agents are trained and coached to stay neutral, calm or friendly. Scoring an
agent with the training prior reads a share of friendly turns as angry or fearful (happy and
angry sound alike to acoustic features: both are loud and high-pitched). Bayes' rule under a
known prior shift (Saerens et al., 2002) puts the role's own prior in: the odds of the negative
classes are multiplied by ``prior odds / training odds`` and each row is renormalised, so strong
evidence still wins (docs/features.md, "Agents' prior" has what this costs on truly negative
speech).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from etl.corpora.labels import is_negative_class

AGENT_ROLE = "agent"
# Share of an agent's speech expected to be negative (angry, sad, fearful, disgust).
AGENT_NEGATIVE_PRIOR = 0.2


def agent_prior_setting(value: float | str | None) -> float | None:
    """The agent prior a setting asks for: None (unset) = :data:`AGENT_NEGATIVE_PRIOR`, ``"off"``
    = None (the models' own prior), else the share itself, checked."""
    if value is None:
        return AGENT_NEGATIVE_PRIOR
    if isinstance(value, str) and value.strip().lower() == "off":
        return None
    return _checked_share(float(value))


def _checked_share(share: float) -> float:
    if not 0.0 < share < 1.0:
        raise ValueError(f"a role's negative prior must lie strictly between 0 and 1, not "
                         f"{share}")
    return share


def negative_odds_factor(classes: Sequence[str], negative_share: float) -> float:
    """What the negative classes' probabilities are multiplied by so that, among equally
    likely-sounding segments, ``negative_share`` of the speech reads negative; 1.0 when the
    scheme has no negative class or only negative ones.

    Raises
    ------
    ValueError
        ``negative_share`` outside (0, 1).
    """
    _checked_share(negative_share)
    negative = sum(is_negative_class(c) for c in classes)
    if negative in (0, len(classes)):
        return 1.0
    trained = negative / len(classes)  # class-balanced fitting: each class weighs 1/K
    return (negative_share / (1.0 - negative_share)) / (trained / (1.0 - trained))


def apply_negative_prior(proba: np.ndarray, classes: Sequence[str], *,
                         rows: np.ndarray, negative_share: float) -> np.ndarray:
    """``proba`` (n, K) with the rows selected by ``rows`` (bool, n) moved to the prior
    ``negative_share``; a new array, rows still summing to 1."""
    out = np.array(proba, dtype=np.float64, copy=True)
    factor = negative_odds_factor(classes, negative_share)
    if factor == 1.0 or not rows.any():
        return out
    negative = np.array([is_negative_class(c) for c in classes])
    out[np.ix_(rows, negative)] *= factor
    out[rows] /= out[rows].sum(axis=1, keepdims=True)
    return out
