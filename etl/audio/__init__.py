"""Audio: decoding and resampling (``decode``), the phone line's rate and band (``telephony``) and
its simulation for training copies (``phone_line``), filter banks and the Hann window
(``filters``), STFT-based DSP kernels (``dsp``), time intervals (``intervals``) and voice activity
detection (``vad``: thresholds, frame analysis and scoring windows; ``vad_decision``: from frames
to speech regions).

``__all__`` lists the names callers outside ``etl.audio`` use; each is imported from its module
on first use (``etl.public``).
"""

from etl.public import Exports

_EXPORTS = Exports(__name__, {
    "etl.audio.decode": (
        "AUDIO_EXTENSIONS", "AudioError", "AudioInfo", "bandlimit", "is_audio_path", "load_audio",
        "read_info", "resample", "sha256_file", "to_telephony", "trim_silence",
    ),
    "etl.audio.dsp": ("librosa_stft_magnitude",),
    "etl.audio.filters": ("mel",),
    "etl.audio.intervals": (
        "intersect_regions", "overlap", "Region", "total_length", "union_regions",
    ),
    "etl.audio.phone_line": ("augment_copies", "chain_spec", "g711_roundtrip"),
    "etl.audio.telephony": ("TELEPHONY_BAND_HZ", "TELEPHONY_RATE"),
    "etl.audio.vad": (
        "NARROWBAND_MAX_SR", "detect_speech", "FrameAnalyser", "is_narrowband", "VadConfig",
        "windows",
    ),
})
__all__ = _EXPORTS.names  # noqa: PLE0605 - the names above, listed once
__getattr__ = _EXPORTS.resolve
