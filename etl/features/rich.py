"""The ``rich`` feature kernel: frame-level descriptors (LLDs) from one STFT, then statistics.

`rich_llds` turns a prepared signal (analysis rate, DC-free, level-normalised:
`etl.features.extraction`) into one row of descriptors per frame; `rich_pool` summarises a run
of frames into the 242 ``rich`` features. Clips, call segments and long clips all go through
these two (`etl.features.extraction.extract`, `extract_segments`).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
from scipy.fft import dct

from etl.audio import dsp, filters
from etl.features.specs import SPECTRAL_LLDS, FeatureSpec


@dataclass(frozen=True)
class _RichKernels:
    """Precomputed matrices for one parameter set (mel, DCT, band masks, window autocorrelation)."""

    gain2: np.ndarray  # (K,) squared band gain
    freqs: np.ndarray  # (Kb,) bin frequencies inside the band
    freqs_sq: np.ndarray  # (Kb,)
    band: slice  # bins inside the band
    mel: np.ndarray  # (K, n_mels) float32, transposed for frames @ mel
    dct: np.ndarray  # (n_mels, n_mfcc) float32
    contrast: tuple[slice, ...]  # bins relative to the band
    alpha: tuple[tuple[int, int], tuple[int, int]]  # (lo, hi) columns of the in-band cumsum
    hammarberg: tuple[slice, slice]  # relative to the band
    window_ac: np.ndarray
    tau_min: int
    tau_max: int
    power_scale: float  # Parseval: sum_k w_k P_k * power_scale = mean square of the frame
    parseval_w: np.ndarray  # (K,) float32


def _bins(freqs: np.ndarray, lo: float, hi: float, offset: int = 0) -> slice:
    idx = np.flatnonzero((freqs >= lo) & (freqs <= hi))
    return slice(int(idx[0]) - offset, int(idx[-1]) + 1 - offset)


def _cum_edges(freqs: np.ndarray, lo: float, hi: float, offset: int) -> tuple[int, int]:
    # sum over bins (a, b] of the band == cum[:, b] - cum[:, a]
    sl = _bins(freqs, lo, hi, offset)
    return max(sl.start - 1, 0), sl.stop - 1


@lru_cache(maxsize=8)
def _rich_kernels(spec: FeatureSpec) -> _RichKernels:
    p, sr = spec.params, spec.sample_rate
    n_fft, win = p["n_fft"], p["win_length"]
    freqs = np.fft.rfftfreq(n_fft, d=1.0 / sr)
    low, high = p["band_hz"]
    gain = dsp.band_gain(n_fft, sr, low, high)
    mel = filters.mel(sr=sr, n_fft=n_fft, n_mels=p["n_mels"], fmin=p["mel_fmin"],
                      fmax=p["mel_fmax"])
    if (mel.sum(axis=1) <= 0).any():
        raise ValueError(f"empty mel filters for {spec.name}/{spec.channel}: raise n_fft")
    dct_m = dct(np.eye(p["n_mels"]), type=2, norm="ortho", axis=0)[: p["n_mfcc"]]
    band = _bins(freqs, low, high)
    edges = p["contrast_edges_hz"]
    tau_min = int(np.floor(sr / p["f0_max_hz"]))
    tau_max = int(np.ceil(sr / p["f0_min_hz"]))
    if n_fft < win + tau_max + 2:
        raise ValueError("n_fft too small for a linear autocorrelation up to the lowest F0")
    weights = np.full(n_fft // 2 + 1, 2.0, dtype=np.float32)
    weights[0] = 1.0
    if n_fft % 2 == 0:
        weights[-1] = 1.0
    window = filters.hann(win, dtype=np.float32).astype(np.float64)  # as the STFT applies it
    off = band.start
    return _RichKernels(
        gain2=(gain * gain).astype(np.float32),
        freqs=freqs[band].astype(np.float32),
        freqs_sq=(freqs[band] ** 2).astype(np.float32),
        band=band,
        mel=np.ascontiguousarray(mel.T, dtype=np.float32),
        dct=np.ascontiguousarray(dct_m.T, dtype=np.float32),
        contrast=tuple(_bins(freqs, edges[i], edges[i + 1], off) for i in range(len(edges) - 1)),
        alpha=(_cum_edges(freqs, *p["alpha_bands_hz"][0], off),
               _cum_edges(freqs, *p["alpha_bands_hz"][1], off)),
        hammarberg=(_bins(freqs, *p["hammarberg_bands_hz"][0], off),
                    _bins(freqs, *p["hammarberg_bands_hz"][1], off)),
        window_ac=dsp.window_autocorrelation(win, n_fft, tau_max + 2).astype(np.float32),
        tau_min=tau_min,
        tau_max=tau_max,
        power_scale=float(1.0 / (n_fft * float(np.sum(window * window)))),
        parseval_w=weights,
    )


# LLD matrix layout: [spectral LLDs (9) | mfcc | d mfcc | dd mfcc | contrast | f0 | voiced | hnr]
def _lld_layout(p: dict[str, Any]) -> dict[str, slice]:
    n_spec, n_mfcc = len(SPECTRAL_LLDS), p["n_mfcc"]
    n_con = len(p["contrast_edges_hz"]) - 1
    o = n_spec
    layout = {"spec": slice(0, n_spec), "mfcc": slice(o, o + n_mfcc)}
    o += n_mfcc
    layout["d"] = slice(o, o + n_mfcc)
    o += n_mfcc
    layout["dd"] = slice(o, o + n_mfcc)
    o += n_mfcc
    layout["contrast"] = slice(o, o + n_con)
    o += n_con
    layout["f0"], layout["voiced"], layout["hnr"] = slice(o, o + 1), slice(o + 1, o + 2), slice(o + 2, o + 3)
    layout["width"] = slice(0, o + 3)
    return layout


def _rich_lld_block(spectrum: np.ndarray, zcr: np.ndarray, prev_log_mel: np.ndarray | None,
                    spec: FeatureSpec, k: _RichKernels, out: np.ndarray) -> np.ndarray:
    """Fill LLD rows ``out`` ``(B, width)`` for one STFT block ``(B, K)``.

    Written for speed (the nightly scorer's budget is ~7 us per frame): every descriptor comes
    from the band-limited power spectrum in as few passes as possible; mel-domain values
    (flatness, flux) reuse the log-mel matrix that MFCCs need anyway. Returns the block's last
    log-mel row (flux continues across blocks).
    """
    p, sr = spec.params, spec.sample_rate
    lay = _lld_layout(p)
    eps = np.float32(dsp.EPS)
    power = spectrum.real * spectrum.real
    power += spectrum.imag * spectrum.imag
    power *= k.gain2  # the channel's band (telephony: 300-3400 Hz), same gain as bandlimit()
    pb = power[:, k.band]
    cum = np.cumsum(pb, axis=1)
    total = cum[:, -1] + eps
    mean_square = (power @ k.parseval_w) * k.power_scale
    rms_db = 10.0 * np.log10(mean_square + eps)
    centroid = (pb @ k.freqs) / total
    bandwidth = np.sqrt(np.maximum((pb @ k.freqs_sq) / total - centroid * centroid, 0.0))
    rolloff = k.freqs[np.argmax(cum >= p["rolloff"] * total[:, None], axis=1)]
    mel = power @ k.mel + eps  # (B, n_mels)
    log_mel = 10.0 * np.log10(mel)
    flatness = 10.0 ** (log_mel.mean(axis=1) / 10.0) / mel.mean(axis=1)
    prev = log_mel[:1] if prev_log_mel is None else prev_log_mel[None, :]
    flux = np.sqrt(np.mean(np.diff(np.concatenate([prev, log_mel]), axis=0) ** 2, axis=1))
    (a0, a1), (b0, b1) = k.alpha
    alpha = 10.0 * np.log10((cum[:, a1] - cum[:, a0] + eps) / (cum[:, b1] - cum[:, b0] + eps))
    h_lo, h_hi = k.hammarberg
    hammarberg = 10.0 * np.log10((pb[:, h_lo].max(axis=1) + eps) / (pb[:, h_hi].max(axis=1) + eps))
    out[:, lay["spec"]] = np.stack([rms_db, centroid, bandwidth, rolloff, flatness, zcr, flux,
                                    alpha, hammarberg], axis=1)
    out[:, lay["mfcc"]] = log_mel @ k.dct
    q = p["contrast_quantile"]
    for b, sl in enumerate(k.contrast):
        sorted_p = np.sort(pb[:, sl], axis=1)
        n_q = max(1, round(q * sorted_p.shape[1]))
        valley = sorted_p[:, :n_q].mean(axis=1)
        peak = sorted_p[:, -n_q:].mean(axis=1)
        out[:, lay["contrast"].start + b] = 10.0 * np.log10((peak + eps) / (valley + eps))
    f0, voiced, hnr = dsp.yin_from_power(
        power, n_fft=p["n_fft"], sr=sr, window_ac=k.window_ac, tau_min=k.tau_min,
        tau_max=k.tau_max, threshold=p["yin_threshold"], octave_ratio=p["yin_octave_ratio"])
    voiced &= rms_db > p["silence_dbfs"]
    out[:, lay["f0"].start] = np.where(voiced, f0, 0.0)
    out[:, lay["voiced"].start] = voiced
    out[:, lay["hnr"].start] = hnr
    return log_mel[-1]


def _frame_zcr(y: np.ndarray, start_frame: int, stop_frame: int, win: int, hop: int) -> np.ndarray:
    """Zero-crossing rate of each frame ``(F,)`` from one O(n) pass over the samples."""
    half = win // 2
    lo = max(start_frame * hop - half, 0)
    hi = min((stop_frame - 1) * hop - half + win, len(y))
    piece = y[lo:hi]
    # int32: half the memory of the default int64 on hour-long signals, and exact
    changes = np.signbit(piece[1:]) != np.signbit(piece[:-1])
    crossings = np.concatenate([np.zeros(1, np.int32), np.cumsum(changes, dtype=np.int32)])
    starts = np.clip(np.arange(start_frame, stop_frame) * hop - half - lo, 0, len(piece) - 1)
    stops = np.clip(starts + win - 1, 0, len(piece) - 1)
    return ((crossings[stops] - crossings[starts]) / (win - 1)).astype(np.float32)


def rich_llds(y: np.ndarray, spec: FeatureSpec, start_frame: int = 0,
               stop_frame: int | None = None) -> np.ndarray:
    """LLD matrix float32 ``(F, width)`` for frames ``[start_frame, stop_frame)`` of ``y``.

    ``y`` must be DC-free (callers subtract its mean). The STFT runs in blocks (bounded
    memory); deltas are computed over the whole range.
    """
    p = spec.params
    k = _rich_kernels(spec)
    lay = _lld_layout(p)
    total = dsp.frame_count(len(y), p["hop"])
    stop = total if stop_frame is None else min(stop_frame, total)
    out = np.zeros((max(stop - start_frame, 0), lay["width"].stop), dtype=np.float32)
    if len(out) == 0:
        return out
    zcr = _frame_zcr(y, start_frame, stop, p["win_length"], p["hop"])
    prev: np.ndarray | None = None
    for first, _raw, spectrum in dsp.iter_stft_blocks(
            y, win_length=p["win_length"], hop=p["hop"], n_fft=p["n_fft"],
            start_frame=start_frame, stop_frame=stop):
        lo = first - start_frame
        rows = out[lo: lo + len(spectrum)]
        prev = _rich_lld_block(spectrum, zcr[lo: lo + len(spectrum)], prev, spec, k, rows)
    mfcc = out[:, lay["mfcc"]]
    d1 = dsp.deltas(mfcc, p["delta_width"])
    out[:, lay["d"]] = d1
    out[:, lay["dd"]] = dsp.deltas(d1, p["delta_width"])
    return out


def rich_pool(lld: np.ndarray, spec: FeatureSpec) -> np.ndarray:
    """Statistics over frames ``(F, width)`` -> feature vector float32 ``(n_features,)``.

    Kept to a few dozen vectorised numpy calls: the nightly scorer pools thousands of
    segments per call channel.
    """
    p = spec.params
    lay = _lld_layout(p)
    hop_s = p["hop"] / spec.sample_rate
    n = lld.shape[0]
    t = np.arange(n) * hop_s
    n_base = lay["mfcc"].stop  # spectral LLDs then MFCCs are the leading columns
    stats, extra = dsp.stats8(lld[:, :n_base], t, extra_quantiles=(5.0, 95.0))
    tail = lld[:, n_base:lay["f0"].start].astype(np.float64)  # deltas and contrast
    tail_mean, tail_std = tail.mean(axis=0), tail.std(axis=0)
    o_d, o_c = lay["d"].start - n_base, lay["contrast"].start - n_base
    n_mfcc, n_con = p["n_mfcc"], lay["contrast"].stop - lay["contrast"].start

    rms = lld[:, 0].astype(np.float64)
    d_rms = np.diff(rms) / hop_s
    energy = np.array([
        rms.max() if n else 0.0, extra[1, 0] - extra[0, 0], d_rms.std() if d_rms.size else 0.0,
        _mean(d_rms[d_rms > 0]), _mean(d_rms[d_rms < 0])])
    voiced = lld[:, lay["voiced"].start] > 0.5
    f0 = lld[:, lay["f0"].start].astype(np.float64)
    hnr = lld[:, lay["hnr"].start].astype(np.float64)
    return np.concatenate([
        stats.T.ravel(),
        tail_std[o_d: o_d + 2 * n_mfcc],
        np.stack([tail_mean[o_c: o_c + n_con], tail_std[o_c: o_c + n_con]], axis=1).ravel(),
        energy,
        _f0_block(f0, voiced, t, hop_s),
        _voice_quality(f0, voiced, rms, hnr),
        _timing(rms, voiced, n, hop_s, p, p95=float(extra[1, 0]) if n else 0.0),
    ]).astype(np.float32)


def _mean(x: np.ndarray) -> float:
    return float(x.mean()) if x.size else 0.0


def _f0_block(f0: np.ndarray, voiced: np.ndarray, t: np.ndarray, hop_s: float) -> np.ndarray:
    """12 F0 features in semitones re 27.5 Hz; all 0 when nothing is voiced."""
    out = np.zeros(12)
    n = len(f0)
    if n == 0 or not voiced.any():
        return out
    st_all = 12.0 * np.log2(np.maximum(f0, 1.0) / 27.5)
    st = st_all[voiced]
    tv = t[voiced]
    out[0] = st.size / n
    st_mean = st.mean()
    out[1], out[2] = st_mean, st.std()
    q = dsp.sorted_quantiles(np.sort(st)[:, None], (5.0, 10.0, 50.0, 90.0, 95.0))[:, 0]
    out[3:6] = q[1:4]
    out[6] = q[4] - q[0]
    if st.size > 1:
        tc = tv - tv.mean()
        out[7] = float(tc @ (st - st_mean)) / max(float(tc @ tc), dsp.EPS)
    out[8] = f0[voiced].mean()
    # F0 movement only between consecutive voiced frames (no jumps across pauses)
    pairs = voiced[:-1] & voiced[1:]
    d = (np.diff(st_all) / hop_s)[pairs]
    if d.size:
        out[9] = d.std()
        out[10], out[11] = _mean(d[d > 0]), _mean(d[d < 0])
    return out


def _voice_quality(f0: np.ndarray, voiced: np.ndarray, rms_db: np.ndarray, hnr: np.ndarray) -> np.ndarray:
    """jitter/shimmer approximations (frame level) and HNR statistics over voiced frames."""
    out = np.zeros(5)
    if len(f0) < 2 or not voiced.any():
        return out
    pairs = voiced[:-1] & voiced[1:]
    if pairs.any():
        periods = 1.0 / np.maximum(f0, 1.0)
        dp = np.abs(np.diff(periods))[pairs]
        out[0] = dp.mean() / periods[voiced].mean()
        out[1] = np.abs(np.diff(rms_db))[pairs].mean()
    hv = hnr[voiced]
    out[2], out[3], out[4] = hv.mean(), hv.std(), np.median(hv)
    return out


def _timing(rms_db: np.ndarray, voiced: np.ndarray, n: int, hop_s: float, p: dict[str, Any],
            *, p95: float) -> np.ndarray:
    """duration, syllable-rate proxy, voiced-run rate and lengths, pause ratio.

    Levels are relative to the unit's 95th-percentile frame level ``p95`` (dB).
    """
    duration = n * hop_s
    if n == 0:
        return np.zeros(6)
    ref = p95
    floor = max(ref - p["syllable_floor_db"], p["silence_dbfs"])
    min_gap = max(1, round(p["syllable_min_gap_s"] / hop_s))
    peaks = dsp.count_envelope_peaks(rms_db, floor_db=floor, min_gap=min_gap)
    v_start, v_stop = dsp.runs(voiced)
    u_start, u_stop = dsp.runs(~voiced)
    pause = rms_db < max(ref - p["pause_floor_db"], p["silence_dbfs"])
    return np.array([
        duration, peaks / duration, len(v_start) / duration,
        _mean((v_stop - v_start) * hop_s), _mean((u_stop - u_start) * hop_s), pause.mean()])
