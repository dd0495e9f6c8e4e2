"""The phone line every telephony feature variant, phone-line copy and generated call models:
its sample rate and pass band. Constants only, so light modules (feature specs) can name them."""

from __future__ import annotations

from typing import Final

TELEPHONY_RATE: Final[int] = 8000
TELEPHONY_BAND_HZ: Final[tuple[float, float]] = (300.0, 3400.0)
