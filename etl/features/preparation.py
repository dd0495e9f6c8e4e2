"""A signal made ready for a feature set's kernels: mono, its rate, its level, checked.

`prepare` takes one clip from any rate to what the kernels read: mixed down (`as_mono`),
resampled to the set's analysis rate, telephony through the phone band (`to_analysis_rate`),
checked for silence, scaled to the set's level (`normalise_level`; `channel_level` measures a
long channel block by block), trimmed (``rich``) and checked for length. What it refuses is a
`FeatureExtractionError` whose ``reason`` is stored; `check_finite` refuses a vector the
kernels made non-finite.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from etl.audio.decode import resample, to_telephony, trim_silence
from etl.features.specs import TELEPHONY_RATE, FeatureSpec


class FeatureExtractionError(ValueError):
    """A signal has no usable content (silent, too short, non-finite). ``reason`` is stored."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def as_mono(signal: np.ndarray) -> np.ndarray:
    y = np.asarray(signal)
    if y.ndim == 2:  # (channels, n) as etl.audio.decode returns it
        y = y.mean(axis=0)
    if y.ndim != 1:
        raise ValueError(f"signal must be (n,) or (channels, n), got shape {np.shape(signal)}")
    return np.ascontiguousarray(y, dtype=np.float32)


def to_analysis_rate(y: np.ndarray, sr: int, spec: FeatureSpec, *, bandlimit: bool) -> np.ndarray:
    """Resample (soxr HQ) to the spec's rate; telephony also goes through the phone band.

    ``bandlimit=False`` skips the whole-signal FFT band-pass (long call channels): the rich
    set applies the same 300-3400 Hz gain to every STFT frame anyway.
    """
    if spec.channel == "telephony":
        if bandlimit:
            return to_telephony(y, sr)[0]
        return resample(y, sr, TELEPHONY_RATE)
    return resample(y, sr, spec.sample_rate)


def _loudest_frame_dbfs(y: np.ndarray, sr: int, frame_s: float = 0.025) -> float:
    frame = max(1, int(frame_s * sr))
    n = len(y) // frame
    if n == 0:
        return float(10 * np.log10(np.mean(np.square(y, dtype=np.float64)) + 1e-20)) if len(y) else -200.0
    energy = np.square(y[: n * frame].reshape(n, frame), dtype=np.float32).mean(axis=1)
    return float(10 * np.log10(float(energy.max()) + 1e-20))


def channel_level(frame_energy: np.ndarray, level_norm: dict[str, Any] | None) -> float | None:
    """The level `normalise_level` measures, from a channel's mean-square energies of
    consecutive ``level_norm["frame_s"]`` frames (gathered block by block); None without
    ``level_norm`` or frames."""
    if not level_norm or frame_energy.size == 0:
        return None
    return 10.0 * float(np.log10(
        float(np.percentile(frame_energy, float(level_norm["percentile"]))) + 1e-20))


def normalise_level(y: np.ndarray, sr: int, level_norm: dict[str, Any] | None, *,
                    level_dbfs: float | None = None) -> np.ndarray:
    """``y`` scaled so its ``percentile``-th 25 ms frame level is ``target_dbfs`` (float32 ``(n,)``).

    One gain for the whole unit (a clip, or a call channel): loudness relative to the rest of
    the unit survives, the recording's or the line's absolute level does not. ``level_norm``
    None (feature sets stored before it) returns ``y`` unchanged. A unit with no frame above
    -120 dBFS is left as it is (the silence checks reject it). ``level_dbfs`` given: the unit's
    level measured elsewhere (`channel_level` of a whole channel read in blocks).
    """
    if not level_norm or len(y) == 0:
        return y
    if level_dbfs is not None:
        level = level_dbfs
    else:
        frame = max(1, int(float(level_norm["frame_s"]) * sr))
        n = max(len(y) // frame, 1)
        piece = y[: n * frame] if len(y) >= frame else y
        energy = np.square(piece.reshape(n, -1), dtype=np.float32).mean(axis=1)
        level = 10.0 * np.log10(
            float(np.percentile(energy, float(level_norm["percentile"]))) + 1e-20)
    if level < -120.0:
        return y
    gain = 10.0 ** ((float(level_norm["target_dbfs"]) - level) / 20.0)
    return (y * np.float32(gain)).astype(np.float32, copy=False)


def prepare(signal: np.ndarray, sr: int, spec: FeatureSpec) -> np.ndarray:
    """Mono, analysis rate, checked for silence, level-normalised and trimmed (rich), checked
    for length."""
    if sr <= 0:
        raise ValueError(f"sample rate must be positive, got {sr}")
    y = as_mono(signal)
    if not np.isfinite(y).all():
        raise FeatureExtractionError("non-finite samples in the signal")
    if len(y) == 0:
        raise FeatureExtractionError("too short: empty signal")
    y = to_analysis_rate(y, sr, spec, bandlimit=True)
    rate, p = spec.sample_rate, spec.params
    loudest = _loudest_frame_dbfs(y, rate)
    if loudest < p["silence_dbfs"]:
        raise FeatureExtractionError(
            f"silent: loudest 25 ms frame at {max(loudest, -200.0):.1f} dBFS "
            f"(threshold {p['silence_dbfs']:.0f} dBFS)")
    y = normalise_level(y, rate, p.get("level_norm"))
    if p.get("trim_top_db") is not None:
        y = trim_silence(y, rate, top_db=float(p["trim_top_db"]))
    if len(y) < p["min_duration_s"] * rate:
        raise FeatureExtractionError(
            f"too short: {len(y) / rate:.3f} s of sound after trimming "
            f"(minimum {p['min_duration_s']} s)")
    return y


def check_finite(values: np.ndarray, spec: FeatureSpec) -> np.ndarray:
    bad = ~np.isfinite(values)
    if bad.any():
        names = [spec.feature_names[i] for i in np.flatnonzero(bad)[:5]]
        raise FeatureExtractionError(f"non-finite feature values: {', '.join(names)}")
    return values
