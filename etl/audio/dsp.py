"""Numpy signal-processing kernels for feature extraction: one STFT, everything derived from it.

Everything here is vectorised over frames. Shapes use ``F`` for frames, ``K`` for rfft bins
(``n_fft // 2 + 1``) and ``L`` for autocorrelation lags. No Prefect, no database.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import scipy.fft as sfft
from numpy.lib.stride_tricks import sliding_window_view
from scipy.ndimage import maximum_filter1d, uniform_filter1d

from etl.audio.filters import hann

EPS = 1e-10


def frame_count(n_samples: int, hop: int) -> int:
    """Frames of a centred framing (frame ``i`` centred on sample ``i * hop``)."""
    return 1 + n_samples // hop


def centred_frames(signal: np.ndarray, first: int, last: int, *, hop: int,
                   width: int) -> np.ndarray:
    """Frames ``[first, last)`` of a centred framing, ``(last - first, width)`` (a view).

    Frame ``i`` covers samples ``[i*hop - width//2, i*hop - width//2 + width)``, zero padded
    where it runs off either end (``librosa.stft(center=True, pad_mode="constant")``); only
    the samples the frames touch are copied, so blocks of a long signal stay cheap.
    """
    lo = first * hop - width // 2
    hi = (last - 1) * hop - width // 2 + width
    piece = signal[max(lo, 0): max(min(hi, len(signal)), 0)]
    if lo < 0 or hi > len(signal):
        piece = np.concatenate([np.zeros(max(-lo, 0), piece.dtype), piece,
                                np.zeros(max(hi - len(signal), 0), piece.dtype)])
    return sliding_window_view(piece, width)[::hop]


def iter_stft_blocks(
    signal: np.ndarray,
    *,
    win_length: int,
    hop: int,
    n_fft: int,
    start_frame: int = 0,
    stop_frame: int | None = None,
    block_frames: int = 4096,
) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """Centred STFT of ``signal`` in blocks of frames (memory stays bounded for long channels).

    Frame ``i`` covers samples ``[i*hop - win_length//2, i*hop + win_length//2)`` (zero padded
    at the edges, like ``librosa.stft(center=True, pad_mode="constant")``); the Hann-windowed
    frame is zero padded at its end to ``n_fft`` (so ``n_fft >= win_length + max_lag`` keeps
    the autocorrelation linear, not circular, up to ``max_lag``).

    Yields
    ------
    (first_frame, raw_frames, spectrum)
        raw_frames float32 ``(B, win_length)`` un-windowed (a view: for zero-crossings);
        spectrum complex64 ``(B, n_fft//2 + 1)``.
    """
    total = frame_count(len(signal), hop)
    stop = total if stop_frame is None else min(stop_frame, total)
    window = hann(win_length, dtype=np.float32)
    for first in range(start_frame, stop, block_frames):
        last = min(first + block_frames, stop)
        raw = centred_frames(signal, first, last, hop=hop, width=win_length)
        # scipy.fft keeps float32 (complex64), where numpy.fft would promote to complex128;
        # zero padding into a preallocated buffer avoids the copy rfft(..., n=n_fft) makes
        padded = np.zeros((len(raw), n_fft), dtype=np.float32)
        np.multiply(raw, window, out=padded[:, :win_length])
        spectrum = sfft.rfft(padded, axis=1)
        yield first, raw, spectrum


def librosa_stft_magnitude(signal: np.ndarray, *, n_fft: int, hop: int) -> np.ndarray:
    """|STFT| exactly as ``np.abs(librosa.stft(y, n_fft=n_fft, hop_length=hop))`` (0.11 defaults).

    librosa windows float32 frames with a float64 Hann window, so the FFT runs in float64 and
    the result is stored as complex64; doing the same keeps the numbers identical to the last
    bit in practice (which matters for chroma: its tuning estimate is an argmax over
    0.01-semitone bins that a 1-ulp difference can flip).

    Returns float32 ``(K, F)`` (librosa's orientation, for the seed-compatible path). Memory is
    ~50 bytes per bin and frame while it runs (~2 MB per second at 22,050 Hz): long signals go
    through `iter_librosa_stft_magnitude` instead.
    """
    y = signal.astype(np.float32, copy=False)
    return _magnitude(centred_frames(y, 0, frame_count(len(y), hop), hop=hop, width=n_fft), n_fft)


def _magnitude(frames: np.ndarray, n_fft: int) -> np.ndarray:
    # (no overwrite_x=True: scipy then takes a copying code path)
    spectrum = sfft.rfft(frames * hann(n_fft), axis=1)
    return np.ascontiguousarray(np.abs(spectrum.astype(np.complex64)).T)


def iter_librosa_stft_magnitude(
    signal: np.ndarray, *, n_fft: int, hop: int, block_frames: int = 2048
) -> Iterator[np.ndarray]:
    """`librosa_stft_magnitude` in blocks of frames, float32 ``(K, <= block_frames)`` each.

    The same frames (centred, zero padded at both ends) and the same arithmetic per frame, so
    ``np.concatenate(list(...), axis=1)`` equals `librosa_stft_magnitude`; memory stays at
    one block however long the signal is.
    """
    y = signal.astype(np.float32, copy=False)
    total = frame_count(len(y), hop)
    for first in range(0, total, block_frames):
        last = min(first + block_frames, total)
        yield _magnitude(centred_frames(y, first, last, hop=hop, width=n_fft), n_fft)


def band_gain(n_fft: int, sr: int, low_hz: float, high_hz: float, skirt_hz: float = 50.0) -> np.ndarray:
    """Per-bin amplitude gain ``(K,)`` of the band-pass used by ``etl.audio.decode.bandlimit``."""
    freqs = np.fft.rfftfreq(n_fft, d=1.0 / sr)
    gain = np.clip((freqs - (low_hz - skirt_hz)) / skirt_hz, 0.0, 1.0)
    if high_hz < sr / 2:
        gain *= np.clip(((high_hz + skirt_hz) - freqs) / skirt_hz, 0.0, 1.0)
    return gain.astype(np.float32)


def window_autocorrelation(win_length: int, n_fft: int, max_lag: int) -> np.ndarray:
    """Normalised autocorrelation of the Hann window, float64 ``(max_lag + 1,)`` (Boersma 1993)."""
    # the float32 window `iter_stft_blocks` applies, promoted: its own autocorrelation
    spec = np.fft.rfft(hann(win_length, dtype=np.float32).astype(np.float64), n=n_fft)
    ac = np.fft.irfft(np.abs(spec) ** 2, n=n_fft)[: max_lag + 1]
    return ac / ac[0]


def yin_from_power(
    power: np.ndarray,
    *,
    n_fft: int,
    sr: int,
    window_ac: np.ndarray,
    tau_min: int,
    tau_max: int,
    threshold: float,
    octave_ratio: float = 0.7,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """F0, voicing and HNR for every frame from the power spectrum of the same STFT.

    Wiener-Khinchin: the autocorrelation of a windowed frame is ``irfft(|X|^2)``, computed as
    a DCT-I of the (real, even) power spectrum, which is the same numbers at half the cost. Dividing by
    the window's own autocorrelation undoes the taper (Boersma 1993), giving a normalised
    ``r(tau)``. YIN's difference function is then ``d(tau) = 2 r(0) (1 - r(tau))`` and its
    cumulative-mean-normalised form ``d'(tau) = (1 - r(tau)) tau / sum_{j<=tau} (1 - r(j))``.
    The period is the first dip of ``d'`` under ``threshold`` in ``[tau_min, tau_max]``, refined
    to the local minimum, replaced by the dip near twice that lag when that one is deeper than
    ``octave_ratio`` times it (half-period errors of band-limited speech), and refined by
    parabolic interpolation.

    Parameters
    ----------
    power : float32 ``(F, K)``
    window_ac : ``(>= tau_max + 2,)`` from `window_autocorrelation`

    Returns
    -------
    f0_hz : float32 ``(F,)`` (0 where unvoiced)
    voiced : bool ``(F,)``
    hnr_db : float32 ``(F,)`` harmonics-to-noise ratio ``10 log10(r / (1 - r))`` at the period,
        clipped to [-20, 30] dB (meaningful only where voiced).
    """
    n_frames = power.shape[0]
    if n_frames == 0:
        empty = np.zeros(0, np.float32)
        return empty, np.zeros(0, bool), empty
    r, energy, cmndf = _yin_cmndf(power, window_ac=window_ac, tau_max=tau_max)
    search = cmndf[:, tau_min - 1: tau_max]  # lags tau_min .. tau_max
    has_dip, best = _yin_dips(search, tau_min=tau_min, threshold=threshold,
                              octave_ratio=octave_ratio)
    # parabolic interpolation around the minimum (in lag units)
    frames = np.arange(n_frames)
    col = best + tau_min - 1  # column in cmndf
    left = cmndf[frames, np.maximum(col - 1, 0)]
    mid = cmndf[frames, col]
    right = cmndf[frames, np.minimum(col + 1, cmndf.shape[1] - 1)]
    denom = left - 2.0 * mid + right
    shift = np.where(np.abs(denom) > EPS, 0.5 * (left - right) / np.where(denom == 0, 1, denom), 0.0)
    period = (col + 1).astype(np.float64) + np.clip(shift, -1.0, 1.0)
    voiced = has_dip & (energy[:, 0] > EPS)
    f0 = np.where(voiced, sr / np.maximum(period, 1.0), 0.0).astype(np.float32)
    r_at = np.clip(r[frames, col + 1], 1e-2, 1 - 1e-3)
    hnr = np.clip(10.0 * np.log10(r_at / (1.0 - r_at)), -20.0, 30.0).astype(np.float32)
    return f0, voiced, hnr


def _yin_cmndf(power: np.ndarray, *, window_ac: np.ndarray,
               tau_max: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(r, energy, cmndf)`` of :func:`yin_from_power`'s frames.

    ``r`` ``(F, tau_max + 2)`` is the normalised autocorrelation at lags 0 .. tau_max + 1,
    ``energy`` ``(F, 1)`` the unnormalised ``r(0)``, and ``cmndf`` ``(F, tau_max + 1)`` YIN's
    ``d'`` at lags 1 .. tau_max + 1 (column j is lag j + 1).
    """
    ac = sfft.dct(power, type=1, axis=1)[:, : tau_max + 2]  # == n_fft * irfft(power)
    energy = ac[:, :1].copy()
    # r = ac / r(0) / window_ac, in place (this kernel is a third of the per-frame cost)
    r = np.multiply(ac, (1.0 / np.maximum(energy, EPS)).astype(ac.dtype))
    r *= (1.0 / window_ac[: tau_max + 2]).astype(ac.dtype)
    one_minus = np.subtract(1.0, r[:, 1:], dtype=ac.dtype)  # lags 1 .. tau_max + 1
    cmndf = np.cumsum(one_minus, axis=1)
    np.maximum(cmndf, EPS, out=cmndf)
    np.divide(one_minus, cmndf, out=cmndf)
    cmndf *= np.arange(1, tau_max + 2, dtype=ac.dtype)
    return r, energy, cmndf


def _yin_dips(search: np.ndarray, *, tau_min: int, threshold: float,
              octave_ratio: float) -> tuple[np.ndarray, np.ndarray]:
    """``(has_dip, best)`` per frame: whether ``search`` (``d'`` at lags tau_min ..
    tau_max, ``(F, L)``) dips under ``threshold``, and the column of the period's dip."""
    n_frames = search.shape[0]
    below = search < threshold
    has_dip = below.any(axis=1)
    first = np.argmax(below, axis=1)
    # walk to the bottom of the dip: argmin in a window of tau_min lags after the first crossing
    width = max(tau_min, 2)
    idx = np.minimum(first[:, None] + np.arange(width)[None, :], search.shape[1] - 1)
    rows = np.arange(n_frames)[:, None]
    best = idx[np.arange(n_frames), np.argmin(search[rows, idx], axis=1)]
    # Octave check: band-limited speech (no fundamental below 300 Hz on a phone line) can
    # show a false first dip at half the period. Prefer the dip at twice the lag when it is
    # clearly deeper.
    double = 2 * (best + tau_min) - tau_min  # search column of lag 2 * tau
    in_range = double + 2 < search.shape[1]
    if in_range.any():
        around = np.clip(double[:, None] + np.arange(-2, 3)[None, :], 0, search.shape[1] - 1)
        at_double = search[rows, around]
        pick = np.argmin(at_double, axis=1)
        deeper = in_range & (at_double[np.arange(n_frames), pick]
                             < octave_ratio * search[np.arange(n_frames), best])
        best = np.where(deeper, around[np.arange(n_frames), pick], best)
    return has_dip, best


def deltas(values: np.ndarray, width: int = 2) -> np.ndarray:
    """Regression deltas along frames (axis 0), edge-padded; ``(F, D)`` -> ``(F, D)`` per frame."""
    if values.shape[0] == 0:
        return values.copy()
    padded = np.pad(values, ((width, width), (0, 0)), mode="edge")
    n = values.shape[0]
    out = np.zeros_like(values)
    for k in range(1, width + 1):
        out += k * (padded[width + k: width + k + n] - padded[width - k: width - k + n])
    return out / (2.0 * sum(k * k for k in range(1, width + 1)))


def sorted_quantiles(sorted_values: np.ndarray, qs: Sequence[float]) -> np.ndarray:
    """Percentiles (numpy's default linear interpolation) of columns already sorted on axis 0.

    ``(F, D)`` sorted, ``qs`` in [0, 100] -> ``(len(qs), D)``; one sort serves many quantiles
    (``np.percentile`` re-partitions per call, which dominates pooling of short segments).
    """
    n = sorted_values.shape[0]
    pos = np.asarray(qs, dtype=np.float64) / 100.0 * (n - 1)
    lo = np.floor(pos).astype(np.intp)
    hi = np.minimum(lo + 1, n - 1)
    frac = (pos - lo)[:, None]
    return sorted_values[lo] * (1.0 - frac) + sorted_values[hi] * frac


def stats8(values: np.ndarray, times: np.ndarray, *, extra_quantiles: Sequence[float] = ()
           ) -> tuple[np.ndarray, np.ndarray]:
    """Frame statistics of each column: mean, std, p10, p50, p90, skew, kurtosis, slope.

    Parameters
    ----------
    values : ``(F, D)``; times : ``(F,)`` seconds (for the slope, units per second)
    extra_quantiles : more percentiles to return from the same sort

    Returns
    -------
    stats : float64 ``(8, D)``. Skew and (excess) kurtosis are 0 for (near-)constant columns
        and slope is 0 for fewer than 2 frames, so nothing is NaN.
    extra : float64 ``(len(extra_quantiles), D)``
    """
    n, d = values.shape
    out = np.zeros((8, d))
    if n == 0:
        return out, np.zeros((len(extra_quantiles), d))
    x = values.astype(np.float64)
    mean = x.mean(axis=0)
    c = x - mean
    c2 = c * c
    var = c2.mean(axis=0)
    std = np.sqrt(var)
    ok = std > 1e-6 * (np.abs(mean) + 1e-6)
    inv_var = np.where(ok, 1.0 / np.where(ok, var, 1.0), 0.0)
    out[0] = mean
    out[1] = std
    quant = sorted_quantiles(np.sort(x, axis=0), (10.0, 50.0, 90.0, *extra_quantiles))
    out[2:5] = quant[:3]
    out[5] = (c2 * c).mean(axis=0) * inv_var * np.sqrt(inv_var)
    out[6] = np.where(ok, (c2 * c2).mean(axis=0) * inv_var * inv_var - 3.0, 0.0)
    if n > 1:
        tc = times - times.mean()
        out[7] = (tc @ c) / max(float(tc @ tc), EPS)
    return out, quant[3:]


def runs(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Start and stop indices ``(R,)``, ``(R,)`` of runs of True in a boolean ``(F,)``."""
    padded = np.concatenate([[False], mask, [False]]).astype(np.int8)
    edges = np.diff(padded)
    return np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)


def count_envelope_peaks(envelope_db: np.ndarray, *, floor_db: float, min_gap: int) -> int:
    """Local maxima of a smoothed dB envelope above ``floor_db``, at least ``min_gap`` apart."""
    if envelope_db.size < 3:
        return 0
    smooth = uniform_filter1d(envelope_db, size=5, mode="nearest")
    local = maximum_filter1d(smooth, size=2 * min_gap + 1, mode="nearest")
    peaks = (smooth >= local) & (smooth > floor_db)
    peaks[1:] &= smooth[1:] > smooth[:-1]  # plateaus count once
    return int(peaks.sum())


def estimate_tuning(
    magnitude: np.ndarray,
    *,
    sr: float,
    bins_per_octave: int = 12,
    resolution: float = 0.01,
    fmin: float = 150.0,
    fmax: float = 4000.0,
    threshold: float = 0.1,
) -> float:
    """``librosa.estimate_tuning(S=magnitude, sr=sr, ...)`` (0.11), bit for bit, several times faster.

    librosa's ``piptrack`` interpolates every bin of the whole spectrogram and allocates
    several full-size temporaries, then keeps only the thresholded local maxima between
    ``fmin`` and ``fmax``. Here only the column maxima (the threshold reference) touch the
    whole spectrogram; the peak search runs on the ``fmin..fmax`` rows and the parabolic
    interpolation only at the peaks. Dtypes follow librosa's exactly (float32 in stays
    float32, the interpolation stencil computes in float64 like numba's typing does) because
    the result is an argmax over ``resolution``-wide bins that a 1-ulp difference can flip.

    Parameters
    ----------
    magnitude : ``(K, F)`` non-negative magnitude spectrogram (``K = n_fft // 2 + 1``)
    sr : sample rate in Hz
    bins_per_octave, resolution : as ``librosa.pitch_tuning``
    fmin, fmax, threshold : as ``librosa.piptrack`` (its reference is the column maximum)

    Returns
    -------
    tuning in fractions of a bin, in ``[-0.5, 0.5)``; 0.0 when no peak qualifies (librosa
    also warns then).

    Raises
    ------
    ValueError
        as `piptrack_peaks`.
    """
    pitch, mags = piptrack_peaks(magnitude, sr=sr, fmin=fmin, fmax=fmax, threshold=threshold)[2:]
    return tuning_from_peaks(pitch, mags, resolution=resolution, bins_per_octave=bins_per_octave)


def tuning_from_peaks(pitch: np.ndarray, mags: np.ndarray, *, resolution: float = 0.01,
                      bins_per_octave: int = 12) -> float:
    """The tuning `estimate_tuning` derives from `piptrack_peaks`' ``(pitch, mags)`` ``(P,)``.

    Peaks are found per frame, so the peaks of a long spectrogram are the concatenated peaks
    of its blocks (in any order: a median and a histogram follow).
    """
    # librosa keeps the pitched peaks at least as strong as their median magnitude
    voiced = pitch > 0
    picked = pitch[(mags >= np.median(mags[voiced])) & voiced] if voiced.any() else pitch[:0]
    return _pitch_tuning(picked, resolution=resolution, bins_per_octave=bins_per_octave)


def piptrack_peaks(
    magnitude: np.ndarray,
    *,
    sr: float,
    fmin: float = 150.0,
    fmax: float = 4000.0,
    threshold: float = 0.1,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The non-zero entries of ``librosa.piptrack(S=magnitude, sr=sr, ...)`` (0.11, ``ref=np.max``).

    Returns
    -------
    (bins, frames, pitch, mags)
        each ``(P,)`` for the ``P`` peaks, in librosa's ``np.nonzero`` (bin-major) order: bin and
        frame indices (int64), interpolated frequency in Hz and interpolated magnitude (both
        ``magnitude``'s dtype). ``librosa.piptrack`` returns these at ``[bins, frames]`` of its
        two ``(K, F)`` outputs and zeros elsewhere.

    Raises
    ------
    ValueError
        ``magnitude`` not 2-D with at least 3 bins, or ``fmin`` not positive (bin 0 would
        need librosa's edge rules, which this fast path does not reproduce).
    """
    S = np.asarray(magnitude)
    if S.ndim != 2 or S.shape[0] < 3:
        raise ValueError(f"magnitude must be (bins >= 3, frames), got shape {S.shape}")
    if not fmin > 0:
        raise ValueError(f"fmin must be positive for the fast peak picking, got {fmin}")
    n_fft = 2 * (S.shape[0] - 1)  # what librosa infers from S
    freqs = np.fft.rfftfreq(n=n_fft, d=1.0 / sr)
    in_band = np.flatnonzero((fmin <= freqs) & (freqs < min(fmax, float(sr) / 2)))
    if len(in_band) == 0:
        empty = np.empty(0, dtype=np.int64)
        return empty, empty, np.empty(0, S.dtype), np.empty(0, S.dtype)
    # fmin > 0 excludes bin 0 and ``freqs < sr/2`` the Nyquist bin, so every in-band bin has
    # both neighbours and librosa's edge rules never apply.
    lo, hi = int(in_band[0]), int(in_band[-1])
    ref = threshold * S.max(axis=0)  # (F,) over ALL bins, in S's dtype, as librosa does
    block = np.ascontiguousarray(S[lo - 1: hi + 2])  # (m + 2, F): the band and its neighbours
    kept = block * (block > ref)
    centre = kept[1:-1]
    # util.localmax; flat indices in bin-major order (np.nonzero's), several times cheaper
    # than 2-D np.nonzero and 2-D fancy indexing
    flat = np.flatnonzero((centre > kept[:-2]) & (centre >= kept[2:]))
    n_frames = S.shape[1]
    rows, frames = np.divmod(flat, n_frames)
    values = block.reshape(-1)
    below, x0, above = values[flat], values[flat + n_frames], values[flat + 2 * n_frames]
    # librosa's numba stencil types `2 * x` and `(a - b) / 2` of float32 x as float64 (numpy
    # would stay in float32), then stores the shift in S's dtype
    a = (above + below).astype(np.float64) - 2 * x0.astype(np.float64)
    b = (above - below).astype(np.float64) / 2
    with np.errstate(divide="ignore", invalid="ignore"):
        shift = np.where(np.abs(b) >= np.abs(a), 0.0, -b / a).astype(S.dtype)
    avg = (above - below) / 2.0  # np.gradient's centred difference, S's dtype
    mags = x0 + 0.5 * avg * shift
    bins = rows + lo
    pitch = ((bins + shift) * float(sr) / n_fft).astype(S.dtype)
    return bins, frames, pitch, mags


def _pitch_tuning(frequencies: np.ndarray, *, resolution: float, bins_per_octave: int) -> float:
    """``librosa.pitch_tuning`` (0.11) with the same dtype flow: histogram peak of residuals."""
    frequencies = frequencies[frequencies > 0]
    if not np.any(frequencies):
        return 0.0
    # librosa.hz_to_octs with tuning 0: log2(f / (440 / 16)), kept in the input's dtype
    residual = np.mod(bins_per_octave * np.log2(frequencies / (440.0 / 16)), 1.0)
    residual[residual >= 0.5] -= 1.0  # 0.95 of a bin is -0.05 from the next one up
    edges = np.linspace(-0.5, 0.5, int(np.ceil(1.0 / resolution)) + 1)
    return float(edges[np.argmax(_uniform_histogram(residual, edges))])


def _uniform_histogram(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """``np.histogram(values, edges)[0]`` for evenly spaced ``edges``, without its sort.

    The bin is computed arithmetically, then moved by one where rounding put a value on the
    wrong side of an edge, so counts equal numpy's (half-open bins, the last one closed).
    """
    n_bins = len(edges) - 1
    v = values[(values >= edges[0]) & (values <= edges[-1])]
    idx = np.floor((v - edges[0]) * (n_bins / (edges[-1] - edges[0]))).astype(np.intp)
    np.clip(idx, 0, n_bins - 1, out=idx)
    idx -= v < edges[idx]
    idx += (v >= edges[np.minimum(idx + 1, n_bins)]) & (idx < n_bins - 1)
    return np.bincount(idx, minlength=n_bins)
