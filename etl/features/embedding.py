"""The voice columns of a feature set (``richvoice``): what the encoder hears, and its embeddings.

The encoder (`etl.features.voice`) reads 16 kHz audio; these functions hand it the signal the
rich kernels read (prepared at the set's analysis rate), brought up to its rate, and a long
telephony channel's segments through the phone band as training clips reach it
(`encoder_input`). `voice_embeddings` embeds segments of one signal, `clip_embeddings` many
prepared clips in shared batches. The feature set's stored ``params["voice"]`` is checked
against this code first (`etl.features.voice.params.check_params`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from etl.audio.decode import bandlimit, resample
from etl.features.specs import TELEPHONY_BAND_HZ, FeatureSpec

# Context each side of a segment for its phone band-pass: the pass band's edges ring for a few
# tens of milliseconds, so the segment's own samples come out as from the whole channel.
ENCODER_BAND_MARGIN_S = 0.25


def clip_embeddings(clips: Sequence[np.ndarray], spec: FeatureSpec) -> np.ndarray:
    """Voice embeddings float32 ``(len(clips), 256)`` of prepared clips (analysis rate), as
    segments of one concatenated signal so they share the encoder's batches."""
    lengths = np.array([len(y) for y in clips], dtype=np.float64)
    ends = np.cumsum(lengths) / spec.sample_rate
    bounds = np.stack([ends - lengths / spec.sample_rate, ends], axis=1)
    return voice_embeddings(np.concatenate(clips), spec, bounds)


def encoder_input(y: np.ndarray, spec: FeatureSpec, bounds: np.ndarray) -> np.ndarray:
    """What the voice encoder reads of a long channel, as it hears training clips: telephony
    clips reach it through the phone band (`etl.features.preparation.to_analysis_rate` with
    ``bandlimit``), so the channel's segments ``bounds`` (seconds, disjoint) do too; samples
    outside them are zero.

    Without it a 16 kHz VoIP call hands the encoder 50-300 Hz of voice and line rumble that no
    training row had (the rich features ignore that band on their own). Each segment is
    band-passed with `ENCODER_BAND_MARGIN_S` of its surroundings rather than the whole
    channel at once, which would cost as much as the encoder.
    """
    if spec.channel != "telephony":
        return y
    from scipy.fft import next_fast_len

    low, high = TELEPHONY_BAND_HZ
    rate = spec.sample_rate
    margin = round(ENCODER_BAND_MARGIN_S * rate)
    out = np.zeros_like(y)
    for start_s, end_s in bounds:
        lo = min(max(round(float(start_s) * rate), 0), len(y))
        hi = min(max(round(float(end_s) * rate), lo), len(y))
        a, b = max(lo - margin, 0), min(hi + margin, len(y))
        piece = np.pad(y[a:b], (0, next_fast_len(b - a, real=True) - (b - a)))
        out[lo:hi] = bandlimit(piece, rate, low_hz=low, high_hz=high)[lo - a: hi - a]
    return out


def voice_embeddings(y: np.ndarray, spec: FeatureSpec, bounds: np.ndarray) -> np.ndarray:
    """Voice-encoder embeddings float32 ``(len(bounds), 256)`` of ``bounds`` (seconds) of ``y``
    (mono, at the spec's analysis rate; telephony audio is brought up to the encoder's rate, so
    training copies and calls of every bandwidth reach it through the same path).

    Raises
    ------
    etl.features.voice.params.VoiceEncoderError
        the weights are missing or altered, or the spec's encoder is not this code's.
    """
    from etl.features.voice.params import ENCODER_RATE, check_params
    from etl.features.voice.weights import load_encoder

    params = spec.params["voice"]
    check_params(params)
    rate = spec.sample_rate
    y16 = y if rate == ENCODER_RATE else resample(y, rate, ENCODER_RATE)
    return load_encoder().embed_segments(
        y16, [(float(a), float(b)) for a, b in bounds],
        step_frames=int(params["partial_step_frames"]), min_coverage=float(params["min_coverage"]),
        max_partials=params.get("max_partials"), pad_short=bool(params.get("pad_short", True)))
