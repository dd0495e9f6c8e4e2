"""Actor demographics as the breakdowns group them: one definition of the age bands, and of
an age read from a CSV (manifests, CREMA-D's demographics).

Model evaluation (``etl.training``), the synthetic history (``etl.synthetic.history``) and the
model report group actors by these bands, so a band means the same range everywhere.
"""

from __future__ import annotations

import math
from typing import Final

# (lowest age in the band, label), ascending; a band runs to the next band's lowest age.
AGE_BANDS: Final[tuple[tuple[int, str], ...]] = (
    (0, "<18"), (18, "18-29"), (30, "30-44"), (45, "45-59"), (60, "60+"))
AGE_BAND_LABELS: Final[tuple[str, ...]] = tuple(label for _, label in AGE_BANDS)


def age_band(age: float | None) -> str | None:
    """The band label of ``age`` in years; None when the age is unknown (None or not finite).

    >>> age_band(29), age_band(30), age_band(17), age_band(None)
    ('18-29', '30-44', '<18', None)
    """
    if age is None or not math.isfinite(age):
        return None
    label = AGE_BANDS[0][1]
    for lowest, band in AGE_BANDS:
        if age >= lowest:
            label = band
    return label


def parse_age(value: str) -> int | None:
    """An age in years from a CSV cell; None when blank.

    Raises
    ------
    ValueError
        not a number, or outside 1-119.
    """
    if not value:
        return None
    try:
        age = int(float(value))
    except ValueError:
        raise ValueError(f"age {value!r} is not a number") from None
    if not 0 < age < 120:
        raise ValueError(f"age {age} is out of range 1-119")
    return age


# Race values of CREMA-D's VideoDemographics.csv (the synthetic corpora draw from these).
CREMAD_RACES: Final[tuple[str, ...]] = ("Caucasian", "African American", "Asian", "Unknown")
