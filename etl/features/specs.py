"""Feature set definitions: names, parameters, versions (`feature_spec`) and `ClipResult`.

Light on purpose (numpy only): the process that registers feature sets and writes results
imports this, not the extraction code in `etl.features.extraction` (scipy and the decoders, whose
import would compete with the workers for the cores). `etl.features.extraction` re-exports everything.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np

from etl.audio.telephony import TELEPHONY_BAND_HZ, TELEPHONY_RATE

SET_NAMES = ("rich", "richvoice", "seed180")
# ``rich`` plus the utterance embedding of a pretrained voice encoder (etl.features.voice). Its
# vectors of call segments are never stored.
VOICE_SET = "richvoice"
# The set `ser features`, `ser train` and the demo use: richvoice (trained as logreg-voice),
# chosen on field calls of training speakers, where it read customer turns and flagged calls
# better than rich (bench/calls_accuracy.py --calls field selection mode, docs/features.md).
DEFAULT_SET = "richvoice"
VOICE_PREFIX = "voice_"
# Sets whose first columns are the rich features (same parameters, same names, same order).
RICH_BASED = ("rich", VOICE_SET)
CHANNELS = ("studio", "telephony")
# Augmented companion sets: "<base>+<augmentation>", e.g. "rich+phone" holds phone-line copies
# of every clip (etl.audio.phone_line), stored as clip_features rows with variant 1..copies.
AUGMENT_SEP = "+"
AUGMENTATIONS = ("phone",)
# Copies of each training clip through a simulated phone line (etl.audio.phone_line.PHONE_CHAIN).
PHONE_COPIES = 2
AUGMENT_SEED = 0
# Level normalisation of the rich set: each unit (a clip, or a whole call channel) is scaled so
# its 95th-percentile 25 ms frame level sits at the target, so loudness alone carries no class.
LEVEL_NORM = {"method": "p95_frame_db", "frame_s": 0.025, "percentile": 95.0,
              "target_dbfs": -20.0}
# Bump when extraction code changes values for the same parameters (it is part of the hash).
ALGORITHM_REVISION = 1

STATS8 = ("mean", "std", "p10", "p50", "p90", "skew", "kurt", "slope")
# Frame-level descriptors summarised by all eight statistics (order = column order in the LLDs).
SPECTRAL_LLDS = ("rms_db", "centroid_hz", "bandwidth_hz", "rolloff_hz", "flatness", "zcr",
                 "flux", "alpha_ratio_db", "hammarberg_db")
CHROMA_NAMES = ("C", "Cs", "D", "Ds", "E", "F", "Fs", "G", "Gs", "A", "As", "B")


@dataclass(frozen=True)
class FeatureSpec:
    """Everything that defines a feature set version.

    Attributes
    ----------
    name : "rich" | "richvoice" | "seed180"
    channel : "studio" | "telephony"
    sample_rate : analysis rate in Hz (input is resampled to it)
    params : every parameter (JSON-serialisable), stored in ``feature_sets.params``
    feature_names : ordered names, ``len == n_features``
    params_hash : sha256 of the canonical JSON of all of the above
    """

    name: str
    channel: str
    sample_rate: int
    params: dict[str, Any] = field(hash=False)
    feature_names: list[str] = field(hash=False)
    params_hash: str

    @property
    def n_features(self) -> int:
        return len(self.feature_names)


def _hash_spec(name: str, channel: str, sample_rate: int, params: dict[str, Any],
               names: list[str]) -> str:
    blob = json.dumps({"name": name, "channel": channel, "sample_rate": sample_rate,
                       "params": params, "feature_names": names}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def _rich_params(channel: str) -> dict[str, Any]:
    """Per-channel parameters: at 8 kHz nothing above 3.4 kHz exists, so bands shrink to it."""
    studio = channel == "studio"
    sr = 16000 if studio else TELEPHONY_RATE
    low, high = (50.0, 8000.0) if studio else TELEPHONY_BAND_HZ
    return {
        "revision": ALGORITHM_REVISION,
        "sample_rate": sr,
        "win_s": 0.040, "hop_s": 0.010,
        "win_length": int(0.040 * sr), "hop": int(0.010 * sr),
        "n_fft": 1024 if studio else 512,  # >= win + longest F0 lag: linear autocorrelation
        "band_hz": [low, high],
        "n_mels": 40 if studio else 26, "mel_fmin": low, "mel_fmax": high, "n_mfcc": 13,
        "f0_min_hz": 60.0, "f0_max_hz": 500.0, "yin_threshold": 0.25, "yin_octave_ratio": 0.5,
        "rolloff": 0.85,
        "contrast_edges_hz": [float(round(x)) for x in np.geomspace(max(low, 100.0), high, 7)],
        "contrast_quantile": 0.10,
        "alpha_bands_hz": [[max(low, 50.0), 1000.0], [1000.0, min(high, 5000.0)]],
        "hammarberg_bands_hz": [[max(low, 0.0), 2000.0], [2000.0, min(high, 5000.0)]],
        "delta_width": 2,
        "silence_dbfs": -60.0, "trim_top_db": 40.0, "min_duration_s": 0.25,
        "syllable_min_gap_s": 0.08, "syllable_floor_db": 12.0, "pause_floor_db": 30.0,
        "telephony": None if studio else {"rate": TELEPHONY_RATE, "band_hz": list(TELEPHONY_BAND_HZ)},
        "level_norm": dict(LEVEL_NORM),
    }


def _seed_params(channel: str) -> dict[str, Any]:
    """The seed extractor's librosa defaults; telephony keeps the mel bands inside 300-3400 Hz."""
    studio = channel == "studio"
    return {
        "revision": ALGORITHM_REVISION,
        "sample_rate": 22050 if studio else TELEPHONY_RATE,
        "n_fft": 2048 if studio else 1024, "hop": 512 if studio else 256,
        "n_mels": 128, "mel_fmin": 0.0 if studio else TELEPHONY_BAND_HZ[0],
        "mel_fmax": None if studio else TELEPHONY_BAND_HZ[1],
        "n_mfcc": 40, "mfcc_top_db": 80.0, "n_chroma": 12, "chroma_tuning": "estimate",
        "resampler": "soxr HQ (= librosa.load default soxr_hq)",
        "trim_top_db": None,  # the seed code does not trim; trimming would break comparability
        "silence_dbfs": -60.0, "min_duration_s": 0.10,
        "telephony": None if studio else {"rate": TELEPHONY_RATE, "band_hz": list(TELEPHONY_BAND_HZ)},
    }


def _rich_names(p: dict[str, Any]) -> list[str]:
    mfcc = [f"mfcc_{i:02d}" for i in range(p["n_mfcc"])]
    names = [f"{lld}_{stat}" for lld in (*SPECTRAL_LLDS, *mfcc) for stat in STATS8]
    names += [f"d_{m}_std" for m in mfcc] + [f"dd_{m}_std" for m in mfcc]
    n_contrast = len(p["contrast_edges_hz"]) - 1
    names += [f"contrast_b{b + 1}_{s}" for b in range(n_contrast) for s in ("mean", "std")]
    names += ["energy_max_db", "energy_range_db", "energy_delta_std_db_s",
              "energy_rise_mean_db_s", "energy_fall_mean_db_s"]
    names += ["f0_voiced_fraction", "f0_mean_st", "f0_std_st", "f0_p10_st", "f0_p50_st",
              "f0_p90_st", "f0_range_st", "f0_slope_st_s", "f0_mean_hz", "f0_delta_std_st_s",
              "f0_rise_mean_st_s", "f0_fall_mean_st_s"]
    names += ["jitter_approx", "shimmer_approx_db", "hnr_mean_db", "hnr_std_db", "hnr_p50_db"]
    names += ["duration_s", "syllable_rate_hz", "voiced_segment_rate_hz",
              "voiced_segment_mean_s", "unvoiced_segment_mean_s", "pause_ratio"]
    return names


def _seed_names(p: dict[str, Any]) -> list[str]:
    return ([f"mfcc_{i + 1:02d}_mean" for i in range(p["n_mfcc"])]
            + [f"chroma_{c}_mean" for c in CHROMA_NAMES[: p["n_chroma"]]]
            + [f"mel_{i + 1:03d}_mean" for i in range(p["n_mels"])])


def split_set_name(name: str) -> tuple[str, str | None]:
    """``"rich+phone"`` -> ``("rich", "phone")``; ``"rich"`` -> ``("rich", None)``."""
    base, sep, augmentation = name.partition(AUGMENT_SEP)
    return base, (augmentation if sep else None)


def augmented_set_name(name: str, augmentation: str = "phone") -> str:
    """Name of the augmented companion set of ``name`` (``rich`` -> ``rich+phone``)."""
    return f"{split_set_name(name)[0]}{AUGMENT_SEP}{augmentation}"


def _augment_params(augmentation: str) -> dict[str, Any]:
    from etl.audio.phone_line import chain_spec  # light: the chain's JSON description only

    return {"name": augmentation, "copies": PHONE_COPIES, "seed": AUGMENT_SEED,
            "chain": chain_spec(augmentation)}


def has_phone_copies(name: str, channel: str) -> bool:
    """Whether ``name``/``channel`` has a phone-augmented companion set (``<name>+phone``)."""
    return split_set_name(name)[0] in RICH_BASED and channel == "telephony"


def voice_columns(spec: FeatureSpec) -> slice:
    """The columns of ``spec``'s vectors that hold the voice embedding (empty when it has none)."""
    n_voice = sum(name.startswith(VOICE_PREFIX) for name in spec.feature_names)
    return slice(spec.n_features - n_voice, spec.n_features)


@lru_cache(maxsize=16)
def feature_spec(name: str = "rich", channel: str = "studio") -> FeatureSpec:
    """The current spec of feature set ``name`` for ``channel``.

    ``richvoice`` is ``rich`` followed by the 256 columns of the voice encoder's utterance
    embedding (``params["voice"]``: the encoder, its weights' sha256 and how it cuts a segment).
    ``name`` may name an augmented companion set, ``"rich+phone"``: the ``rich`` parameters plus
    ``params["augment"]`` (the augmentation chain, copies and seed), so a change of the chain is
    a new version. Only the telephony channel has the phone augmentation.

    Raises
    ------
    ValueError
        unknown set, augmentation or channel (the message lists the known ones).
    """
    base, augmentation = split_set_name(name)
    if base not in SET_NAMES:
        raise ValueError(f"unknown feature set {name!r}; known: {', '.join(SET_NAMES)} (and "
                         f"{', '.join(f'{b}{AUGMENT_SEP}{a}' for b in RICH_BASED for a in AUGMENTATIONS)})")
    if channel not in CHANNELS:
        raise ValueError(f"unknown channel {channel!r}; known: {', '.join(CHANNELS)}")
    if augmentation is not None:
        if augmentation not in AUGMENTATIONS or base not in RICH_BASED:
            raise ValueError(f"unknown augmented set {name!r}; known: "
                             f"{', '.join(f'{b}{AUGMENT_SEP}{a}' for b in RICH_BASED for a in AUGMENTATIONS)}")
        if channel != "telephony":
            raise ValueError(f"{name!r} simulates a phone line: it exists for --channel "
                             f"telephony only")
    rich = base in RICH_BASED
    params = _rich_params(channel) if rich else _seed_params(channel)
    names = _rich_names(params) if rich else _seed_names(params)
    if base == VOICE_SET:
        from etl.features.voice.params import (  # light: no weights read
            EMBEDDING_DIM,
            encoder_params,
        )

        params["voice"] = encoder_params()
        names = names + [f"{VOICE_PREFIX}{i:03d}" for i in range(EMBEDDING_DIM)]
    if augmentation is not None:
        params["augment"] = _augment_params(augmentation)
    sr = int(params["sample_rate"])
    return FeatureSpec(name, channel, sr, params, names, _hash_spec(name, channel, sr, params, names))


@dataclass(frozen=True, slots=True)
class ClipResult:
    """Outcome for one clip: ``values`` float32 ``(n_features,)`` or a ``reason``.

    A long clip (over `etl.features.extraction.LONG_CLIP_S`) also carries its speech segments: ``segments`` float64
    ``(S, 2)`` start/end seconds from the start of the file and ``segment_values`` float32
    ``(S, n_features)``. A clip of an augmented set carries ``variants`` float32
    ``(copies, n_features)``, stored as variants 1..copies (``values`` is ``variants[0]``).
    """

    clip_id: int
    values: np.ndarray | None
    reason: str | None = None
    audio_s: float = 0.0
    segments: np.ndarray | None = None
    segment_values: np.ndarray | None = None
    variants: np.ndarray | None = None
