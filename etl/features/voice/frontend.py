"""The voice encoder's input: a segment's level, its mel spectrogram and its partials.

Input
    The power (not log) mel spectrogram ``librosa.feature.melspectrogram(sr=16000, n_fft=400,
    hop_length=160, n_mels=40)``, ``(frames, 40)`` (computed by the project's numpy ports in
    `etl.audio`, equal to librosa's), cut into partials of 160 frames (1.6 s) every
    `PARTIAL_STEP_FRAMES`; `etl.features.voice.encoder` embeds the partials and averages them.

Differences from resemblyzer's ``embed_utterance``
    No VAD trimming (segments come from our own VAD); each segment is scaled to
    `LEVEL_TARGET_DBFS` RMS in both directions (resemblyzer only raises the level), so a soft
    and a loud talker give the encoder the same input level; the partial step is a number of
    frames (resemblyzer: a rate in partials per second, 1.3 by default, i.e. 77 frames).
"""

from __future__ import annotations

import numpy as np

from etl.features.voice.params import (
    ENCODER_RATE,
    HOP_LENGTH,
    LEVEL_TARGET_DBFS,
    MIN_COVERAGE,
    N_FFT,
    N_MELS,
    PARTIAL_FRAMES,
    PARTIAL_STEP_FRAMES,
)


def partial_starts(n_samples: int, *, step_frames: int = PARTIAL_STEP_FRAMES,
                   min_coverage: float = MIN_COVERAGE, max_partials: int | None = None
                   ) -> np.ndarray:
    """First mel frame of each partial of a signal of ``n_samples`` samples.

    resemblyzer's ``compute_partial_slices`` with the step given in frames: partials of
    `PARTIAL_FRAMES` every ``step_frames``; the last one is dropped when less than
    ``min_coverage`` of it is signal, unless it is the only one (there is always one). With
    ``max_partials``, a signal that would get more gets that many, evenly spread (one: the
    middle 1.6 s).

    Returns
    -------
    np.ndarray
        int64 ``(n_partials,)``; partial ``k`` covers frames ``[s_k, s_k + 160)`` and samples
        ``[160 s_k, 160 (s_k + 160))``, which may reach past the signal (zero-padded).
    """
    if not 0 < min_coverage <= 1 or not 0 < step_frames <= PARTIAL_FRAMES:
        raise ValueError(f"need 0 < min_coverage <= 1 and 0 < step_frames <= {PARTIAL_FRAMES}")
    n_frames = int(np.ceil((n_samples + 1) / HOP_LENGTH))
    steps = max(1, n_frames - PARTIAL_FRAMES + step_frames + 1)
    starts = np.arange(0, steps, step_frames, dtype=np.int64)
    last = starts[-1] * HOP_LENGTH
    coverage = (n_samples - last) / (PARTIAL_FRAMES * HOP_LENGTH)
    if coverage < min_coverage and starts.size > 1:
        starts = starts[:-1]
    if max_partials is not None and starts.size > max_partials:
        last_start = max(n_frames - PARTIAL_FRAMES, 0)
        if max_partials == 1:  # the middle of the signal
            starts = np.array([last_start // 2], dtype=np.int64)
        else:  # evenly spread, the first and last partials inside the signal
            starts = np.round(np.linspace(0, last_start, max_partials)).astype(np.int64)
    return starts


def mel_spectrogram(y: np.ndarray) -> np.ndarray:
    """The encoder's input: power mel spectrogram, ``(frames, 40)`` float32.

    ``librosa.feature.melspectrogram(y=y, sr=16000, n_fft=400, hop_length=160, n_mels=40).T``
    with ``frames = 1 + len(y) // 160`` (centred frames, zero-padded ends), computed by the
    project's numpy ports of librosa's STFT and mel filter bank: workers do not import librosa.
    """
    # here, not at the top: the light process that calls `encoder_params` skips scipy
    from etl.audio.dsp import librosa_stft_magnitude
    from etl.audio.filters import mel as mel_filters

    magnitude = librosa_stft_magnitude(np.asarray(y, dtype=np.float32), n_fft=N_FFT,
                                       hop=HOP_LENGTH)
    np.square(magnitude, out=magnitude)
    basis = mel_filters(sr=ENCODER_RATE, n_fft=N_FFT, n_mels=N_MELS)
    return np.ascontiguousarray((basis @ magnitude).T)


def level_scaled(segment: np.ndarray) -> np.ndarray | None:
    """``segment`` scaled to `LEVEL_TARGET_DBFS` RMS as float32; None if empty, silent or
    not finite."""
    if segment.size == 0:
        return None
    rms = float(np.sqrt(np.mean(np.square(segment, dtype=np.float64))))
    if not rms > 0.0 or not np.isfinite(rms):
        return None
    gain = 10.0 ** (LEVEL_TARGET_DBFS / 20.0) / rms
    return (segment * gain).astype(np.float32)


def segment_partials(segment: np.ndarray, *, step_frames: int, min_coverage: float,
                     max_partials: int | None, pad_short: bool
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Mel partials of one level-scaled segment: float32 ``(n_partials, 160, 40)`` and the
    frames of each that are signal, int ``(n_partials,)``. A segment shorter than one partial
    is one partial of its own frames (``pad_short``: zero-padded to 160, as resemblyzer)."""
    starts = partial_starts(segment.size, step_frames=step_frames, min_coverage=min_coverage,
                            max_partials=max_partials)
    mel_frames = 1 + segment.size // HOP_LENGTH
    if not pad_short and mel_frames < PARTIAL_FRAMES:
        mel = mel_spectrogram(segment)
        mels = np.zeros((1, PARTIAL_FRAMES, N_MELS), dtype=np.float32)
        mels[0, :mel_frames] = mel
        return mels, np.array([mel_frames])
    stop = int(starts[-1] + PARTIAL_FRAMES) * HOP_LENGTH
    if stop >= segment.size:  # as resemblyzer: pad, else the mel of the whole signal
        segment = np.pad(segment, (0, stop - segment.size))
    mel = mel_spectrogram(segment)
    return (np.stack([mel[s:s + PARTIAL_FRAMES] for s in starts]),
            np.full(starts.size, PARTIAL_FRAMES))
