"""What the voice encoder is: its identity, its settings, and the params a feature set pins.

The names and numbers here describe resemblyzer's GE2E encoder as this code runs it (package,
weights sha256, mel front end, partials, level): `encoder_params` turns them into a feature
set's ``params["voice"]`` and `check_params` refuses a stored one this code cannot reproduce.
Light on purpose: the process that registers feature sets imports it without numpy work or
the weights (`etl.features.specs`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

ENCODER_RATE = 16000
EMBEDDING_DIM = 256
ENCODER_NAME = "resemblyzer-ge2e"
PACKAGE = "resemblyzer"
PACKAGE_VERSION = "0.1.4"
WEIGHTS_SHA256 = "39373b86598fa3da9fcddee6142382efe09777e8d37dc9c0561f41f0070f134e"

N_FFT = 400  # 25 ms
HOP_LENGTH = 160  # 10 ms
N_MELS = 40
PARTIAL_FRAMES = 160  # 1.6 s, what the encoder was trained on
PARTIAL_STEP_FRAMES = 80
# The last partial is kept (zero-padded) when at least this share of it is signal.
MIN_COVERAGE = 0.75
# At most this many partials per segment, spread evenly over it (None = every one): the network
# costs the same per partial whatever the segment, and nightly scoring has a budget per call.
MAX_PARTIALS: int | None = 1
# resemblyzer zero-pads a segment shorter than a partial; calls have many 0.5-1.6 s segments,
# and a second of silence after them moves the network's state away from the speech's.
PAD_SHORT = False
LEVEL_TARGET_DBFS = -30.0  # resemblyzer's audio_norm_target_dBFS


class VoiceEncoderError(RuntimeError):
    """The encoder's weights are missing, altered, or could not be installed."""


def encoder_params() -> dict[str, Any]:
    """JSON-ready description of the encoder, stored in a feature set's params.

    Reads no weights (the light process that registers feature sets calls it); the weights are
    pinned by their sha256.

    Returns
    -------
    dict
        ``name``, ``package``, ``package_version``, ``weights_sha256``, ``sample_rate``,
        ``mel`` (librosa melspectrogram parameters), ``partial_frames``,
        ``partial_step_frames``, ``min_coverage``, ``level_norm`` and ``embedding_dim``.
    """
    return {
        "name": ENCODER_NAME,
        "package": PACKAGE,
        "package_version": PACKAGE_VERSION,
        "weights_sha256": WEIGHTS_SHA256,
        "sample_rate": ENCODER_RATE,
        "mel": {"n_fft": N_FFT, "hop_length": HOP_LENGTH, "n_mels": N_MELS, "power": 2.0,
                "log": False},
        "partial_frames": PARTIAL_FRAMES,
        "partial_step_frames": PARTIAL_STEP_FRAMES,
        "min_coverage": MIN_COVERAGE,
        "max_partials": MAX_PARTIALS,
        "pad_short": PAD_SHORT,
        "level_norm": {"method": "segment_rms_dbfs", "target_dbfs": LEVEL_TARGET_DBFS,
                       "direction": "both"},
        "embedding_dim": EMBEDDING_DIM,
    }


def check_params(params: Mapping[str, Any]) -> None:
    """Refuse a feature set's ``params["voice"]`` that this code cannot reproduce.

    Raises
    ------
    VoiceEncoderError
        Another encoder, other weights, or other mel or level settings than this code's (a
        model trained on them cannot be scored here: features would differ).
    """
    current = encoder_params()
    fixed = ("name", "weights_sha256", "sample_rate", "mel", "level_norm", "embedding_dim",
             "partial_frames")
    changed = [key for key in fixed if params.get(key) != current[key]]
    if changed:
        raise VoiceEncoderError(
            f"this feature set was computed with a voice encoder whose {', '.join(changed)} "
            f"differ from this installation's ({ENCODER_NAME} {PACKAGE_VERSION}, sha256 "
            f"{WEIGHTS_SHA256[:12]}...): install the ser-analytics version that trained it, or "
            f"train a new model (`ser train`)")
