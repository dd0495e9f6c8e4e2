"""The phone line a generated call is recorded through: band limit, line noise, mu-law."""

from __future__ import annotations

import numpy as np

from etl.audio.decode import bandlimit
from etl.audio.phone_line import g711_roundtrip
from etl.audio.telephony import TELEPHONY_BAND_HZ


def telephone_line(signal: np.ndarray, sr: int, *, seed: int,
                   noise_dbfs: float = -66.0) -> np.ndarray:
    """Simulate a narrowband phone line on a ``(channels, n)`` or ``(n,)`` signal at 8 kHz.

    Band limit to 300-3400 Hz, add line noise (white + faint 50 Hz hum), then G.711 mu-law
    (`etl.audio.phone_line.g711_roundtrip`, the codec the training copies pass through too).
    Shape preserved, float32.
    """
    rng = np.random.default_rng(seed)
    low, high = TELEPHONY_BAND_HZ
    y = bandlimit(signal, sr, low_hz=low, high_hz=high)
    n = y.shape[-1]
    noise_amp = 10 ** (noise_dbfs / 20.0)
    y = y + noise_amp * rng.standard_normal(y.shape).astype(np.float32)
    y = y + 0.5 * noise_amp * np.sin(2 * np.pi * 50.0 * np.arange(n) / sr).astype(np.float32)
    return g711_roundtrip(np.clip(y, -1.0, 1.0), law="mu")
