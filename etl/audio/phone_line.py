"""Phone-line augmentation of training clips (audiomentations), seeded per (clip, copy, seed).

A call centre hears customers through a phone line: band limit, a codec (G.711 mu-law/A-law or
a low-bitrate lossy codec), line noise, the talker's level and the line's gain, and short
dropouts. `augment` passes one clip through a random draw of that line; the draw is fixed by
``(clip_key, copy, seed)`` so the same clip, copy index and seed always give the same samples.

Each copy starts from the clip at a nominal speech level, then the line's gains apply.
The chain (`PHONE_CHAIN`) is data: `chain_spec` returns its JSON description, which the
augmented feature set (``rich+phone``, `etl.features.specs.feature_spec`) stores in its params,
so a change of the chain is a new feature set version. Nothing here imports audiomentations
until a clip is augmented (the feature writer imports this module for `chain_spec` only).

Codecs: G.711 (8-bit mu-law and A-law companding, written here with numpy because neither
audiomentations nor any maintained wheel offers G.711 on numpy arrays: the stdlib's audioop is
deprecated and gone in Python 3.13) and MP3 at 8-16 kbit/s (audiomentations ``Mp3Compression``
with its ``fast-mp3-augment`` backend, an in-memory LAME round trip) standing in for the
low-bitrate cellular codecs: no wheel ships a GSM or AMR codec on numpy arrays, and Opus
bindings need the system libopus (not a wheel), so those are not used.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from typing import Any

import numpy as np

# (transform, parameters) in the order the line applies them; "G711" is ours (see module doc).
PHONE_CHAIN: tuple[tuple[str, dict[str, Any]], ...] = (
    # the clip at a nominal speech level first (its 95th-percentile 25 ms frame at -20 dBFS),
    # so the gains below span real line levels whatever the recording's own level was
    ("NominalLevel", {"target_dbfs": -20.0, "percentile": 95.0, "frame_s": 0.025}),
    # the talker's level and the line's gain, then a level change inside the clip
    ("Gain", {"min_gain_db": -15.0, "max_gain_db": 12.0, "p": 1.0}),
    ("GainTransition", {"min_gain_db": -9.0, "max_gain_db": 6.0, "min_duration": 0.2,
                        "max_duration": 0.6, "duration_unit": "seconds", "p": 0.3}),
    # the handset's and the exchange's band edges around 300-3400 Hz
    ("HighPassFilter", {"min_cutoff_freq": 200.0, "max_cutoff_freq": 400.0, "min_rolloff": 12,
                        "max_rolloff": 24, "p": 1.0}),
    ("LowPassFilter", {"min_cutoff_freq": 2900.0, "max_cutoff_freq": 3500.0, "min_rolloff": 12,
                       "max_rolloff": 24, "p": 1.0}),
    # line noise: hiss of varying colour, 15-40 dB below the speech
    ("AddColorNoise", {"min_snr_db": 15.0, "max_snr_db": 40.0, "min_f_decay": -3.0,
                       "max_f_decay": 3.0, "p": 0.8}),
    # one codec per copy
    ("OneOf", {"transforms": [
        ("G711", {"law": "mu", "p": 1.0}),
        ("G711", {"law": "a", "p": 1.0}),
        ("Mp3Compression", {"min_bitrate": 8, "max_bitrate": 16, "backend": "fast-mp3-augment",
                            "p": 1.0}),
    ], "p": 1.0}),
    # short dropouts (lost packets): up to 6 % of the clip, with 5 ms fades
    ("TimeMask", {"min_band_part": 0.01, "max_band_part": 0.06, "fade_duration": 0.005,
                  "p": 0.5}),
    ("Clip", {"a_min": -1.0, "a_max": 1.0, "p": 1.0}),
)

CHAINS = {"phone": PHONE_CHAIN}


def chain_spec(name: str = "phone") -> list[dict[str, Any]]:
    """JSON-ready description of augmentation chain ``name`` (stored in the feature set params).

    Raises
    ------
    ValueError
        unknown chain.
    """
    if name not in CHAINS:
        raise ValueError(f"unknown augmentation {name!r}; known: {', '.join(CHAINS)}")

    def describe(step: tuple[str, dict[str, Any]]) -> dict[str, Any]:
        kind, params = step
        params = dict(params)
        if "transforms" in params:
            params["transforms"] = [describe(t) for t in params["transforms"]]
        return {"transform": kind, "params": params}

    return [describe(step) for step in CHAINS[name]]


# --------------------------------------------------------------------------------------------
# G.711
# --------------------------------------------------------------------------------------------

_MU = 255.0
_A = 87.6


def g711_roundtrip(y: np.ndarray, *, law: str = "mu") -> np.ndarray:
    """Encode to 8-bit G.711 (``law`` "mu" or "a") and decode again, float32 in [-1, 1].

    The continuous companding laws of ITU-T G.711 quantised to 256 levels (sign + 7 bits),
    which is what the segmented codec approximates: the quantisation noise follows the level.
    """
    x = np.clip(np.asarray(y, dtype=np.float64), -1.0, 1.0)
    a = np.abs(x)
    if law == "mu":
        c = np.log1p(_MU * a) / np.log1p(_MU)
    elif law == "a":
        c = np.where(a < 1.0 / _A, _A * a / (1.0 + np.log(_A)),
                     (1.0 + np.log(np.maximum(_A * a, 1.0))) / (1.0 + np.log(_A)))
    else:
        raise ValueError(f"G.711 law must be 'mu' or 'a', not {law!r}")
    c = np.round(c * 127.0) / 127.0  # 7 magnitude bits
    if law == "mu":
        out = np.expm1(c * np.log1p(_MU)) / _MU
    else:
        k = c * (1.0 + np.log(_A))
        out = np.where(c < 1.0 / (1.0 + np.log(_A)), k / _A, np.exp(k - 1.0) / _A)
    return (np.sign(x) * out).astype(np.float32)


# --------------------------------------------------------------------------------------------
# building and applying
# --------------------------------------------------------------------------------------------


def nominal_level(y: np.ndarray, *, sr: int, target_dbfs: float, percentile: float,
                  frame_s: float) -> np.ndarray:
    """``y`` scaled so its ``percentile``-th ``frame_s`` frame level is ``target_dbfs``."""
    frame = max(1, int(frame_s * sr))
    n = len(y) // frame
    if n == 0:
        return y
    energy = np.square(y[: n * frame].reshape(n, frame), dtype=np.float64).mean(axis=1)
    level = 10.0 * np.log10(float(np.percentile(energy, percentile)) + 1e-20)
    if level < -120.0:  # digital silence: nothing to scale
        return y
    return (y * 10.0 ** ((target_dbfs - level) / 20.0)).astype(np.float32)


def _build(step: tuple[str, dict[str, Any]]) -> Any:
    import audiomentations as am

    kind, params = step
    params = dict(params)
    if kind == "NominalLevel":
        return am.Lambda(transform=lambda samples, sample_rate: nominal_level(
            samples, sr=sample_rate, **params), p=1.0)
    if kind == "G711":
        law, p = params["law"], params["p"]
        return am.Lambda(transform=lambda samples, sample_rate: g711_roundtrip(samples, law=law),
                         p=p)
    if kind in ("OneOf", "Compose"):
        children = [_build(t) for t in params.pop("transforms")]
        return getattr(am, kind)(children, **params)
    return getattr(am, kind)(**params)


@lru_cache(maxsize=4)
def _chain(name: str) -> Any:
    import audiomentations as am

    return am.Compose([_build(step) for step in CHAINS[name]], p=1.0)


def copy_seed(clip_key: int | str, copy: int, seed: int) -> int:
    """A 63-bit seed for one (clip, copy, seed): stable across processes and Python versions."""
    digest = hashlib.sha256(f"{clip_key}:{copy}:{seed}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


@contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """audiomentations draws from the global ``random`` and ``numpy.random`` generators: seed
    both for one call and restore them afterwards, so nothing else's randomness changes."""
    py_state, np_state = random.getstate(), np.random.get_state()
    random.seed(seed)
    np.random.seed(seed % 2**32)
    try:
        yield
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)


def augment(signal: np.ndarray, sr: int, *, clip_key: int | str, copy: int, seed: int = 0,
            chain: str = "phone") -> np.ndarray:
    """One augmented copy of a mono clip.

    Parameters
    ----------
    signal : float ``(n,)`` mono samples in [-1, 1]
    sr : sample rate (8 kHz for telephony features; the MP3 codec accepts 8-48 kHz rates)
    clip_key, copy, seed : what fixes the random draw (same triple -> same output)
    chain : name of the chain (`CHAINS`)

    Returns
    -------
    float32 ``(n,)``

    Raises
    ------
    ValueError
        unknown chain, or a signal that is not mono.
    """
    if chain not in CHAINS:
        raise ValueError(f"unknown augmentation {chain!r}; known: {', '.join(CHAINS)}")
    y = np.ascontiguousarray(signal, dtype=np.float32)
    if y.ndim != 1:
        raise ValueError(f"augment expects a mono (n,) signal, got shape {y.shape}")
    try:
        transform = _chain(chain)
    except ImportError as exc:
        raise RuntimeError("phone-line augmentation needs audiomentations and fast-mp3-augment: "
                           "pip install audiomentations fast-mp3-augment") from exc
    with _seeded(copy_seed(clip_key, copy, seed)):
        out = transform(samples=y, sample_rate=int(sr))
    return np.ascontiguousarray(out, dtype=np.float32)


def augment_copies(signal: np.ndarray, sr: int, *, clip_key: int | str, params: dict[str, Any]
                   ) -> list[np.ndarray]:
    """``params["copies"]`` copies (1..copies) per a feature set's ``params["augment"]``."""
    return [augment(signal, sr, clip_key=clip_key, copy=k, seed=int(params["seed"]),
                    chain=str(params["name"]))
            for k in range(1, int(params["copies"]) + 1)]
