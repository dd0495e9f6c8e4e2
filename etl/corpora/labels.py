"""One canonical emotion vocabulary across corpora, and the label schemes models predict.

The label-scheme mapping is also stored as data (tables ``label_schemes`` and
``label_scheme_classes``, seeded by a migration) so analysts can read it in SQL; this module is
the source those rows were written from, and ``tests/test_labels.py`` checks the two agree.
"""

from __future__ import annotations

from typing import Final

CANONICAL_EMOTIONS: Final[tuple[str, ...]] = (
    "neutral",
    "calm",
    "happy",
    "sad",
    "angry",
    "fearful",
    "disgust",
    "surprised",
    "boredom",
    "pleasant_surprise",
)

NEGATIVE_EMOTIONS: Final[frozenset[str]] = frozenset({"sad", "angry", "fearful", "disgust"})
# A call is truly escalated when more than this share of its customer's speech is negative: the
# truth escalation operating points are chosen against and benchmarks count against.
ESCALATED_SHARE: Final[float] = 0.5

# scheme -> (description, {canonical emotion: class label}); emotions absent are excluded.
LABEL_SCHEMES: Final[dict[str, tuple[str, dict[str, str]]]] = {
    "emotion8": (
        "The eight RAVDESS emotions.",
        {e: e for e in ("neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised")},
    ),
    "emotion6": (
        "The six CREMA-D emotions; maps across corpora.",
        {e: e for e in ("angry", "disgust", "fearful", "happy", "neutral", "sad")},
    ),
    "posneg": (
        "Seed CREMA-D study: positive = neutral + happy, negative = angry + disgust.",
        {"neutral": "positive", "happy": "positive", "angry": "negative", "disgust": "negative"},
    ),
    "callcentre4": (
        "Call-centre classes: angry, calm (calm or neutral), happy, sad.",
        {"angry": "angry", "calm": "calm", "neutral": "calm", "happy": "happy", "sad": "sad"},
    ),
}

NEGATIVE_CLASSES: Final[frozenset[str]] = NEGATIVE_EMOTIONS | {"negative"}


def scheme_classes(scheme: str) -> list[str]:
    """Sorted class labels of ``scheme``; raises ValueError for an unknown scheme."""
    try:
        mapping = LABEL_SCHEMES[scheme][1]
    except KeyError:
        raise ValueError(
            f"unknown label scheme {scheme!r}; choose one of {', '.join(LABEL_SCHEMES)}"
        ) from None
    return sorted(set(mapping.values()))


def map_emotion(scheme: str, emotion: str) -> str | None:
    """Class label of a canonical emotion under ``scheme`` (None = excluded)."""
    return LABEL_SCHEMES[scheme][1].get(emotion)


def is_negative_class(label: str) -> bool:
    return label in NEGATIVE_CLASSES
