"""Named, versioned acoustic feature sets: extraction (numpy, one STFT) and PostgreSQL storage.

Three sets, each with a ``studio`` and a ``telephony`` channel (see docs/features.md for every
feature):

``seed180``
    The seed blog posts' representation, reproduced numerically: per-clip means of 40 MFCC,
    12 chroma and 128 mel bands at 22,050 Hz (n_fft 2048, hop 512), no silence trimming. One
    STFT feeds all three (the seed code computes three). A comparable baseline.
``rich``
    An emotion-oriented set in the spirit of eGeMAPS/ComParE from ONE STFT per signal
    (16 kHz studio, 8 kHz telephony; 40 ms Hann window, 10 ms hop): energy, spectral shape,
    ZCR, MFCC with deltas, F0/voicing/HNR via a YIN difference function derived from the
    autocorrelation ``irfft(|X|^2)`` of the same frames, jitter/shimmer approximations and
    rhythm proxies, summarised by frame statistics. 242 features.
``richvoice``
    ``rich`` followed by the 256-d utterance embedding of a pretrained voice encoder
    (`etl.features.voice`) of the same signal. 498 features.

A feature set's identity is ``(name, channel, params_hash)``; the hash covers the analysis
rate, every parameter, the ordered feature names and an algorithm revision, so any change
The definitions (names, parameters, hashes, `ClipResult`) live in the light `etl.features.specs`
and are re-exported here; the kernels in `etl.features.rich` and `etl.features.seed`, the voice
encoder in `etl.features.voice`. Signals are made ready for the kernels by
`etl.features.preparation` (analysis rate, phone band, level, silence and length checks), and
the voice columns come from `etl.features.embedding`. This module runs the kernels on clips,
call segments and files. No database here (worker processes import this module; storage is
`etl.features.store`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from threadpoolctl import ThreadpoolController

from etl.audio import dsp
from etl.audio.decode import AudioError, load_audio
from etl.audio.phone_line import augment_copies
from etl.audio.vad import detect_speech, windows
from etl.features.embedding import clip_embeddings, encoder_input, voice_embeddings
from etl.features.preparation import (
    FeatureExtractionError,
    as_mono,
    check_finite,
    normalise_level,
    prepare,
    to_analysis_rate,
)
from etl.features.rich import rich_llds, rich_pool
from etl.features.seed import seed_vector
from etl.features.specs import (
    ALGORITHM_REVISION,
    CHANNELS,
    CHROMA_NAMES,
    SET_NAMES,
    SPECTRAL_LLDS,
    STATS8,
    TELEPHONY_BAND_HZ,
    TELEPHONY_RATE,
    ClipResult,
    FeatureSpec,
    feature_spec,
    voice_columns,
)

# the definitions from etl.features.specs, and the error `extract` raises, are re-exported
__all__ = [
    "ALGORITHM_REVISION", "CHANNELS", "CHROMA_NAMES", "LONG_CLIP_S", "SET_NAMES",
    "SPECTRAL_LLDS", "STATS8", "TELEPHONY_BAND_HZ", "TELEPHONY_RATE", "ClipResult",
    "FeatureExtractionError", "FeatureSpec", "extract", "extract_files", "extract_many",
    "extract_segments", "feature_spec", "require_extractable", "speech_segments",
]


# --------------------------------------------------------------------------------------------
# Public extraction API
# --------------------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def _threadpools() -> Any:
    return ThreadpoolController()


def _one_blas_thread() -> Any:
    """Small per-frame matrix products are slower with BLAS threads (and we parallelise by
    process); limiting costs ~10 us."""
    return _threadpools().limit(limits=1, user_api="blas")


def extract(signal: np.ndarray, sr: int, spec: FeatureSpec) -> np.ndarray:
    """Feature vector of one clip.

    Parameters
    ----------
    signal : float ``(n,)`` mono or ``(channels, n)`` (mixed down), any rate
    sr : its sample rate
    spec : from `feature_spec`

    Returns
    -------
    float32 ``(spec.n_features,)``, all finite.

    Raises
    ------
    FeatureExtractionError
        silent (loudest 25 ms frame under ``silence_dbfs``), too short after trimming, or
        non-finite input. ``reason`` is what `store_results` records.
    """
    result = extract_many([(signal, sr)], spec)[0]
    if isinstance(result, FeatureExtractionError):
        raise result
    return result


def extract_many(signals: Sequence[tuple[np.ndarray, int]], spec: FeatureSpec
                 ) -> list[np.ndarray | FeatureExtractionError]:
    """`extract` of several clips: a vector float32 ``(spec.n_features,)`` or the error, per clip.

    The voice encoder of ``richvoice`` sees the clips in one batch (its recurrent network is
    cheap per clip only when many clips share each step).
    """
    out: list[np.ndarray | FeatureExtractionError] = []
    prepared: list[np.ndarray] = []
    owners: list[int] = []
    with _one_blas_thread():
        for signal, sr in signals:
            try:
                y = prepare(signal, sr, spec)
            except FeatureExtractionError as exc:
                out.append(exc)
                continue
            if spec.name == "seed180":
                out.append(seed_vector(y, spec))
            else:
                out.append(rich_pool(rich_llds(y - y.mean(), spec), spec))
            prepared.append(y)
            owners.append(len(out) - 1)
        if spec.params.get("voice") and prepared:
            for i, embedding in zip(owners, clip_embeddings(prepared, spec), strict=True):
                out[i] = np.concatenate([out[i], embedding])  # type: ignore[list-item]
    for i, values in enumerate(out):
        if not isinstance(values, FeatureExtractionError):
            try:
                out[i] = check_finite(values, spec)
            except FeatureExtractionError as exc:
                out[i] = exc
    return out


def extract_segments(
    signal: np.ndarray,
    sr: int,
    spec: FeatureSpec,
    segments: Sequence[tuple[float, float]],
    *,
    level_dbfs: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Feature vectors of many segments of one long channel (e.g. one role of a call).

    The channel is resampled once; the STFT runs block-wise over the frames the segments
    need (segments closer than 50 ms share one run of frames); LLDs are pooled per segment
    exactly as `extract` pools a clip, but without per-segment silence trimming. A frame
    belongs to a segment when its centre lies in ``[start_s, end_s)``.

    Parameters
    ----------
    segments : ``(start_s, end_s)`` pairs in seconds, any order.
    level_dbfs : the whole channel's level as `normalise_level` measures it (`channel_level`),
        when ``signal`` is one block of a longer channel: every block then gets the channel's
        gain. None measures ``signal`` itself.

    Returns
    -------
    X : float32 ``(n_segments, n_features)``; rows of invalid segments are zeros
    valid : bool ``(n_segments,)``; False for segments shorter than ``min_duration_s``
        inside the signal (or non-finite results)
    """
    with _one_blas_thread():
        return _extract_segments(signal, sr, spec, segments, level_dbfs=level_dbfs)


def _extract_segments(
    signal: np.ndarray,
    sr: int,
    spec: FeatureSpec,
    segments: Sequence[tuple[float, float]],
    *,
    level_dbfs: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    n_seg = len(segments)
    X = np.zeros((n_seg, spec.n_features), dtype=np.float32)
    valid = np.zeros(n_seg, dtype=bool)
    if n_seg == 0:
        return X, valid
    y = as_mono(signal)
    if not np.isfinite(y).all():
        y = np.nan_to_num(y, nan=0.0, posinf=0.0, neginf=0.0)
    # seed180 has no per-frame band gain: its telephony segments need the band-pass, as clips
    y = to_analysis_rate(y, sr, spec, bandlimit=spec.name == "seed180")
    rate, p = spec.sample_rate, spec.params
    if spec.name == "seed180":
        # seed180 is a clip baseline, not meant for calls: pooled per slice (one STFT each).
        for i, (start, end) in enumerate(segments):
            piece = y[max(int(start * rate), 0): max(int(end * rate), 0)]
            if len(piece) >= p["min_duration_s"] * rate:
                values = seed_vector(piece, spec)
                if np.isfinite(values).all():
                    X[i], valid[i] = values, True
        return X, valid

    n_rich = voice_columns(spec).start
    y = y - y.mean()  # DC-free, as extract() does per clip
    # one gain per channel: a loud line or talker is not an angry one (rich sets since level_norm)
    y = normalise_level(y, rate, p.get("level_norm"), level_dbfs=level_dbfs)
    hop = p["hop"]
    fps = rate / hop
    total = dsp.frame_count(len(y), hop)
    min_frames = int(np.ceil(p["min_duration_s"] * fps))
    bounds = np.asarray(segments, dtype=np.float64).reshape(-1, 2)
    first = np.clip(np.ceil(bounds[:, 0] * fps - 1e-9), 0, total).astype(np.int64)
    last = np.clip(np.ceil(bounds[:, 1] * fps - 1e-9), 0, total).astype(np.int64)
    ok = (last - first) >= max(min_frames, 1)
    order = np.flatnonzero(ok)[np.argsort(first[ok], kind="stable")]
    margin = p["delta_width"] * 2  # deltas of deltas reach 2 * width frames
    i = 0
    while i < len(order):
        run_lo = max(int(first[order[i]]) - margin, 0)
        run_hi = min(int(last[order[i]]) + margin, total)
        j = i + 1
        while j < len(order) and first[order[j]] - margin <= run_hi + 5:
            run_hi = max(run_hi, min(int(last[order[j]]) + margin, total))
            j += 1
        lld = rich_llds(y, spec, run_lo, run_hi)
        for s in order[i:j]:
            values = rich_pool(lld[first[s] - run_lo: last[s] - run_lo], spec)
            if np.isfinite(values).all():
                X[s, :n_rich], valid[s] = values, True
        i = j
    if n_rich < spec.n_features and valid.any():
        keep = np.flatnonzero(valid)
        X[keep, n_rich:] = voice_embeddings(encoder_input(y, spec, bounds[keep]), spec,
                                            bounds[keep])
    return X, valid


def require_extractable(spec: FeatureSpec) -> None:
    """Check, before a run starts, what extraction of ``spec`` needs beyond this code: the
    voice encoder's weights (present, intact) and parameters (``richvoice``).

    Raises
    ------
    etl.features.voice.params.VoiceEncoderError
        with the fix (``ser encoder install``, or train a new model).
    """
    if spec.params.get("voice"):
        from etl.features.voice.params import check_params
        from etl.features.voice.weights import load_encoder

        check_params(spec.params["voice"])
        load_encoder()


# --------------------------------------------------------------------------------------------
# Files -> results (runs in worker processes; no database)
# --------------------------------------------------------------------------------------------


# Clips longer than this (a user's manifest of long recordings; no corpus clip comes close) also
# get one row per speech segment, cut as the nightly scorer cuts calls: VAD, then 0.5-4 s windows.
LONG_CLIP_S = 30.0
SEGMENT_MIN_S, SEGMENT_MAX_S = 0.5, 4.0


def speech_segments(signal: np.ndarray, sr: int, spec: FeatureSpec
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Feature vectors of the speech segments of one long mono signal.

    Segments are what the nightly scorer scores: speech regions from `etl.audio.vad` cut into windows
    of `SEGMENT_MIN_S`..`SEGMENT_MAX_S` seconds, featurised by `extract_segments` (which mixes
    down and repairs non-finite samples itself; `extract_files` calls this only for clips that
    `extract` accepted).

    Returns
    -------
    bounds : float64 ``(S, 2)`` start/end in seconds; X : float32 ``(S, n_features)``
    """
    wins = windows(detect_speech(as_mono(signal), sr), min_s=SEGMENT_MIN_S, max_s=SEGMENT_MAX_S)
    X, valid = extract_segments(signal, sr, spec, wins)
    bounds = np.asarray(wins, dtype=np.float64).reshape(-1, 2)
    return bounds[valid], X[valid]


def extract_files(items: Iterable[tuple[int, str]], spec: FeatureSpec) -> list[ClipResult]:
    """Decode and extract each ``(clip_id, path)``; decode/extraction problems become reasons.

    Files are decoded straight to the analysis rate (long ones block by block, so memory
    follows the analysis-rate signal, not the file's). Clips longer than `LONG_CLIP_S` also
    get their `speech_segments`. Short clips (and their augmented copies) share one
    `extract_many` pass; a long one is done on its own, so a chunk never holds two.
    """
    augment_params = spec.params.get("augment")
    results: dict[int, ClipResult] = {}
    order: list[int] = []
    pending: list[_Signal] = []
    for clip_id, path in items:
        order.append(clip_id)
        try:
            signal, sr = load_audio(Path(path), sr=spec.sample_rate, mono=True)
        except (AudioError, OSError) as exc:
            results[clip_id] = ClipResult(clip_id, None, f"decode: {exc}".splitlines()[0][:500])
            continue
        audio_s = len(signal) / sr
        if augment_params:
            mono = as_mono(signal)
            if not np.isfinite(mono).all():
                results[clip_id] = ClipResult(clip_id, None, "non-finite samples in the signal",
                                              audio_s)
                continue
            copies = augment_copies(mono, sr, clip_key=clip_id, params=augment_params)
            signals = [_Signal(clip_id, k, copy, sr, audio_s)
                       for k, copy in enumerate(copies, start=1)]
        else:
            signals = [_Signal(clip_id, 0, signal, sr, audio_s)]
        if audio_s > LONG_CLIP_S:
            results.update(_extract_signals(signals, spec))
        else:
            pending.extend(signals)
    results.update(_extract_signals(pending, spec))
    return [results[clip_id] for clip_id in order]


@dataclass(frozen=True, slots=True)
class _Signal:
    """One signal to extract: a clip as decoded (``copy`` 0) or its augmented copy 1..n."""

    clip_id: int
    copy: int
    signal: np.ndarray
    sr: int
    audio_s: float


def _extract_signals(signals: Sequence[_Signal], spec: FeatureSpec) -> dict[int, ClipResult]:
    """`ClipResult` per clip of ``signals`` (a clip has all its copies or an error)."""
    results: dict[int, ClipResult] = {}
    copies: dict[int, list[np.ndarray]] = {}
    extracted = extract_many([(s.signal, s.sr) for s in signals], spec)
    for s, values in zip(signals, extracted, strict=True):
        if s.clip_id in results:  # an earlier copy failed
            continue
        if isinstance(values, FeatureExtractionError):
            reason = f"augmented copy {s.copy}: {values.reason}" if s.copy else values.reason
            results[s.clip_id] = ClipResult(s.clip_id, None, reason, s.audio_s)
        elif s.copy:
            copies.setdefault(s.clip_id, []).append(values)
            if len(copies[s.clip_id]) == spec.params["augment"]["copies"]:
                variants = np.stack(copies[s.clip_id]).astype(np.float32)
                results[s.clip_id] = ClipResult(s.clip_id, variants[0], None, s.audio_s,
                                                variants=variants)
        elif s.audio_s > LONG_CLIP_S:
            bounds, X = speech_segments(s.signal, s.sr, spec)
            results[s.clip_id] = ClipResult(s.clip_id, values, None, s.audio_s, bounds, X)
        else:
            results[s.clip_id] = ClipResult(s.clip_id, values, None, s.audio_s)
    return results
