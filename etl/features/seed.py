"""The ``seed180`` feature kernel: the seed write-ups' per-clip means of 40 MFCC, 12 chroma and
128 mel bands, reproduced numerically from one librosa-compatible STFT (a comparable baseline,
not meant for calls)."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np
from scipy.fft import dct
from scipy.sparse import csr_matrix

from etl.audio import dsp, filters
from etl.features.specs import FeatureSpec


@lru_cache(maxsize=8)
def _seed_kernels(spec: FeatureSpec) -> tuple[Any, np.ndarray]:
    """The mel filter bank as a sparse matrix (each FFT bin feeds at most two triangles, so
    few entries of the dense matrix are non-zero; same sums up to float32 rounding) and
    the orthonormal DCT-II rows."""

    p = spec.params
    mel = filters.mel(sr=spec.sample_rate, n_fft=p["n_fft"], n_mels=p["n_mels"],
                      fmin=p["mel_fmin"], fmax=p["mel_fmax"])
    dct_m = dct(np.eye(p["n_mels"]), type=2, norm="ortho", axis=0)[: p["n_mfcc"]]
    return csr_matrix(mel.astype(np.float32)), dct_m


def seed_vector(y: np.ndarray, spec: FeatureSpec) -> np.ndarray:
    """librosa's mfcc(n_mfcc=40) / chroma_stft(S=|STFT|) / melspectrogram means, one STFT.

    Mirrors librosa 0.11: power mel (Slaney), ``power_to_db(ref=1, amin=1e-10, top_db=80)``
    then orthonormal DCT-II (the mean of a DCT is the DCT of the mean, so it is applied once);
    chroma of the *magnitude* (as the seed code passes ``S=np.abs(stft)``) with tuning
    estimated as ``librosa.estimate_tuning`` does on that magnitude (`dsp.estimate_tuning`
    reproduces it exactly) and inf-norm per frame. Signals longer than `SEED_BLOCK_FRAMES`
    frames (~95 s at 22,050 Hz) go through `_seed_vector_blocks` (bounded memory).
    """
    p, sr = spec.params, spec.sample_rate
    if dsp.frame_count(len(y), p["hop"]) > SEED_BLOCK_FRAMES:
        return _seed_vector_blocks(y, spec)
    mel_fb, dct_m = _seed_kernels(spec)
    mag = dsp.librosa_stft_magnitude(y, n_fft=p["n_fft"], hop=p["hop"])  # (K, F)
    mel = np.asarray(mel_fb @ (mag * mag))  # (n_mels, F)
    mfcc_mean = _seed_mfcc_mean(mel, dct_m, p)
    # librosa.estimate_tuning(S=mag, sr=sr, bins_per_octave=n_chroma), bit for bit
    tuning = dsp.estimate_tuning(mag, sr=sr, bins_per_octave=p["n_chroma"])
    chroma = filters.chroma(sr=sr, n_fft=p["n_fft"], tuning=tuning, n_chroma=p["n_chroma"]) @ mag
    chroma_mean = _normalised_chroma(chroma).mean(axis=1)
    return np.concatenate([mfcc_mean, chroma_mean, mel.mean(axis=1)]).astype(np.float32)


# Frames per block of the seed180 STFT for long signals: ~16 MB of float64 frames at n_fft 2048.
SEED_BLOCK_FRAMES = 4096


def _seed_mfcc_mean(mel: np.ndarray, dct_m: np.ndarray, p: dict[str, Any]) -> np.ndarray:
    log_mel = 10.0 * np.log10(np.maximum(mel, 1e-10))
    log_mel = np.maximum(log_mel, log_mel.max() - p["mfcc_top_db"])
    return dct_m @ log_mel.mean(axis=1, dtype=np.float64)


def _normalised_chroma(chroma: np.ndarray) -> np.ndarray:
    norms = np.abs(chroma).max(axis=0)
    norms[norms < np.finfo(chroma.dtype).tiny] = 1.0
    return chroma / norms


def _seed_vector_blocks(y: np.ndarray, spec: FeatureSpec) -> np.ndarray:
    """`seed_vector` of a long signal with memory bounded by one block of STFT frames.

    Pass 1 keeps the mel spectrogram (128 floats a frame, ~22 KB per second) and the spectral
    peaks; the tuning needs all peaks before any chroma exists, so pass 2 recomputes the STFT
    for the chroma. Same numbers as the one-block path up to float summation order.
    """
    p, sr = spec.params, spec.sample_rate
    mel_fb, dct_m = _seed_kernels(spec)
    stft = {"n_fft": p["n_fft"], "hop": p["hop"], "block_frames": SEED_BLOCK_FRAMES}
    mel_blocks: list[np.ndarray] = []
    pitches: list[np.ndarray] = []
    mags: list[np.ndarray] = []
    for mag in dsp.iter_librosa_stft_magnitude(y, **stft):
        mel_blocks.append(np.asarray(mel_fb @ (mag * mag)))
        pitch, peak_mag = dsp.piptrack_peaks(mag, sr=sr)[2:]
        pitches.append(pitch)
        mags.append(peak_mag)
    mel = np.concatenate(mel_blocks, axis=1)
    del mel_blocks
    tuning = dsp.tuning_from_peaks(np.concatenate(pitches), np.concatenate(mags),
                                   bins_per_octave=p["n_chroma"])
    chroma_fb = filters.chroma(sr=sr, n_fft=p["n_fft"], tuning=tuning, n_chroma=p["n_chroma"])
    chroma_sum = np.zeros(p["n_chroma"])
    for mag in dsp.iter_librosa_stft_magnitude(y, **stft):
        chroma_sum += _normalised_chroma(chroma_fb @ mag).sum(axis=1, dtype=np.float64)
    return np.concatenate([_seed_mfcc_mean(mel, dct_m, p), chroma_sum / mel.shape[1],
                           mel.mean(axis=1, dtype=np.float64)]).astype(np.float32)
