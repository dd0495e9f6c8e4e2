"""Filter banks and windows in plain numpy, equal to the last bit to librosa 0.11 / scipy.

Feature workers do not import librosa or scipy.signal only to build a few matrices: on shared
cores their import cost competes with the work itself. These ports repeat the same numpy
operations in the same order, so the matrices are identical (tests compare them with librosa
and scipy element for element).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np

# Slaney mel scale (librosa's default, htk=False)
_F_SP = 200.0 / 3
_MIN_LOG_HZ = 1000.0
_MIN_LOG_MEL = _MIN_LOG_HZ / _F_SP
_LOGSTEP = np.log(6.4) / 27.0


def hz_to_mel(frequencies: np.ndarray | float) -> np.ndarray:
    """``librosa.hz_to_mel(f, htk=False)``."""
    f = np.asanyarray(frequencies)
    mels = (f - 0.0) / _F_SP
    if f.ndim:
        log_t = f >= _MIN_LOG_HZ
        mels[log_t] = _MIN_LOG_MEL + np.log(f[log_t] / _MIN_LOG_HZ) / _LOGSTEP
    elif f >= _MIN_LOG_HZ:
        mels = _MIN_LOG_MEL + np.log(f / _MIN_LOG_HZ) / _LOGSTEP
    return np.asarray(mels)


def mel_to_hz(mels: np.ndarray) -> np.ndarray:
    """``librosa.mel_to_hz(m, htk=False)`` for an array."""
    m = np.asanyarray(mels)
    freqs = 0.0 + _F_SP * m
    log_t = m >= _MIN_LOG_MEL
    freqs[log_t] = _MIN_LOG_HZ * np.exp(_LOGSTEP * (m[log_t] - _MIN_LOG_MEL))
    return freqs


@lru_cache(maxsize=16)
def mel(*, sr: float, n_fft: int, n_mels: int = 128, fmin: float = 0.0,
        fmax: float | None = None) -> np.ndarray:
    """``librosa.filters.mel(sr=, n_fft=, n_mels=, fmin=, fmax=)`` (Slaney scale and area
    normalisation), float32 ``(n_mels, n_fft // 2 + 1)``. Read-only (cached)."""
    if fmax is None:
        fmax = float(sr) / 2
    weights = np.zeros((int(n_mels), int(1 + n_fft // 2)), dtype=np.float32)
    fftfreqs = np.fft.rfftfreq(n=n_fft, d=1.0 / sr)
    mel_f = mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2))
    fdiff = np.diff(mel_f)
    ramps = np.subtract.outer(mel_f, fftfreqs)
    for i in range(n_mels):
        lower = -ramps[i] / fdiff[i]
        upper = ramps[i + 2] / fdiff[i + 1]
        weights[i] = np.maximum(0, np.minimum(lower, upper))
    enorm = 2.0 / (mel_f[2: n_mels + 2] - mel_f[:n_mels])
    weights *= enorm[:, np.newaxis]
    weights.flags.writeable = False
    return weights


@lru_cache(maxsize=256)
def chroma(*, sr: float, n_fft: int, tuning: float = 0.0, n_chroma: int = 12) -> np.ndarray:
    """``librosa.filters.chroma(sr=, n_fft=, tuning=, n_chroma=)`` with its defaults (ctroct 5,
    octwidth 2, L2 norm per column, base C), float32 ``(n_chroma, n_fft // 2 + 1)``.
    Read-only (cached: seed180 asks for one per estimated tuning, 0.01-bin steps)."""
    frequencies = np.linspace(0, sr, n_fft, endpoint=False)[1:]
    a440 = 440.0 * 2.0 ** (tuning / n_chroma)
    frqbins = n_chroma * np.log2(frequencies / (float(a440) / 16))
    frqbins = np.concatenate(([frqbins[0] - 1.5 * n_chroma], frqbins))
    binwidthbins = np.concatenate((np.maximum(frqbins[1:] - frqbins[:-1], 1.0), [1]))
    D = np.subtract.outer(frqbins, np.arange(0, n_chroma, dtype="d")).T
    n_chroma2 = np.round(float(n_chroma) / 2)
    D = np.remainder(D + n_chroma2 + 10 * n_chroma, n_chroma) - n_chroma2
    wts = np.exp(-0.5 * (2 * D / np.tile(binwidthbins, (n_chroma, 1))) ** 2)
    # librosa.util.normalize(wts, norm=2, axis=0) (fill=None: tiny columns left as they are)
    mag = np.abs(wts).astype(float)
    length = np.sum(mag**2, axis=0, keepdims=True) ** (1.0 / 2)
    length[length < np.finfo(wts.dtype).tiny] = 1.0
    normed = np.empty_like(wts)
    normed[:] = wts / length
    normed *= np.tile(np.exp(-0.5 * (((frqbins / n_chroma - 5.0) / 2) ** 2)), (n_chroma, 1))
    normed = np.roll(normed, -3 * (n_chroma // 12), axis=0)
    out = np.ascontiguousarray(normed[:, : int(1 + n_fft / 2)], dtype=np.float32)
    out.flags.writeable = False
    return out


@lru_cache(maxsize=16)
def hann(length: int, *, dtype: type[np.floating[Any]] = np.float64) -> np.ndarray:
    """Periodic Hann window ``(length,)``, read-only: ``scipy.signal.get_window("hann", length)``
    bit for bit.

    float64 is librosa's STFT window (the seed-compatible path must match librosa to the last
    bit). ``dtype=np.float32`` is the same window rounded once, the window of the float32 STFT
    the rich features run on; its rounding is part of their numbers, so code that divides by
    that window's autocorrelation promotes the float32 window, not the float64 one.
    """
    fac = np.linspace(-np.pi, np.pi, length + 1, dtype=np.float64)
    w = np.zeros(length + 1, dtype=np.float64)
    for k, a in enumerate((0.5, 1.0 - 0.5)):
        w += a * np.cos(k * fac)
    out = w[:-1].astype(dtype, copy=False)
    out.flags.writeable = False
    return out
