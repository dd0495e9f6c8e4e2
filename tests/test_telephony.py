"""The phone line has one definition (etl.audio.telephony): 8 kHz, 300-3400 Hz, used by the
telephony conversion, the telephony feature sets and the generated calls alike."""

from __future__ import annotations

import numpy as np

from etl.audio.decode import to_telephony
from etl.audio.telephony import TELEPHONY_BAND_HZ, TELEPHONY_RATE
from etl.features.specs import feature_spec


def test_the_phone_line_is_8_khz_and_300_to_3400_hz() -> None:
    assert TELEPHONY_RATE == 8000 and TELEPHONY_BAND_HZ == (300.0, 3400.0)


def _level_db(signal: np.ndarray, sr: int, hz: float) -> float:
    spectrum = np.abs(np.fft.rfft(signal * np.hanning(len(signal))))
    return float(20 * np.log10(spectrum[round(hz * len(signal) / sr)] + 1e-12))


def test_to_telephony_delivers_the_band_at_the_rate() -> None:
    sr = 16000
    t = np.arange(sr) / sr
    tones = {hz: np.sin(2 * np.pi * hz * t) for hz in (100.0, 1000.0, 3800.0)}
    narrow, rate = to_telephony(sum(tones.values()).astype(np.float32), sr)
    assert rate == TELEPHONY_RATE and len(narrow) == TELEPHONY_RATE
    in_band = _level_db(narrow, rate, 1000.0)
    assert in_band - _level_db(narrow, rate, 100.0) > 20  # below the band: attenuated
    assert in_band - _level_db(narrow, rate, 3800.0) > 20  # above the band: attenuated


def test_telephony_feature_sets_model_the_same_line() -> None:
    for name in ("rich", "seed180"):
        telephony = feature_spec(name, "telephony").params["telephony"]
        assert telephony == {"rate": TELEPHONY_RATE, "band_hz": list(TELEPHONY_BAND_HZ)}
        assert feature_spec(name, "studio").params["telephony"] is None
