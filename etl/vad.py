"""Voice-activity detection for call channels: band energy + spectral flatness, with hangover.

Frames (32 ms, 20 ms hop) get two numbers: energy in the telephone speech band (300-3400 Hz) and
spectral flatness in that band (geometric / arithmetic mean of the power spectrum; near 1 for
white noise, low for voiced speech with its harmonics and formants). A frame is speech when it is
clearly above the channel's noise floor and not noise-like (or so loud that flatness does not
matter). Decisions are smoothed with a hangover (speech continues a little after the last
speech frame), gaps shorter than ``min_silence_s`` are bridged and bursts shorter than
``min_speech_s`` dropped.

Long recordings are processed block by block: :class:`FrameAnalyser` keeps only the samples of
the last partial frame between blocks, so the per-frame numbers are exactly those of one pass
over the whole channel, while memory stays at one block. The per-frame arrays it keeps are
small (50 frames/s, a few floats each: ~1.5 MB per channel-hour).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import scipy.fft
from numpy.lib.stride_tricks import sliding_window_view

Region = tuple[float, float]

# Below this share of a channel's power above 4 kHz, audio is narrowband (phone audio).
NARROWBAND_MAX_SR = 11025
NARROWBAND_HIGH_SHARE = 1e-4  # wideband speech: ~1e-2..1e-1; phone audio resampled up: ~1e-10


@dataclass(frozen=True, slots=True)
class VadConfig:
    """VAD thresholds. dB values are relative to full scale (dBFS) unless said otherwise."""

    frame_s: float = 0.032  # 256 samples at 8 kHz: an FFT size, no padding
    hop_s: float = 0.020  # 50 frames/s is plenty for speech/pause decisions (and 2x cheaper)
    band_hz: tuple[float, float] = (300.0, 3400.0)
    energy_margin_db: float = 10.0  # speech must be this far above the noise floor (p10)
    dynamic_range_db: float = 45.0  # ... and within this of the loud level (p99)
    min_level_dbfs: float = -55.0  # ... and above this absolute level (line noise, dither)
    flatness_max: float = 0.40  # flatter (more noise-like) frames are not speech
    loud_override_db: float = 25.0  # frames this far above the floor count regardless of flatness
    hangover_s: float = 0.12
    min_speech_s: float = 0.20
    min_silence_s: float = 0.25
    chunk_frames: int = 8192  # frames per FFT batch (bounds memory at high sample rates)

    def __post_init__(self) -> None:
        if not 0 < self.hop_s <= self.frame_s:
            raise ValueError("VadConfig needs 0 < hop_s <= frame_s")


@dataclass
class FrameAnalyser:
    """Streaming per-frame band energy and flatness for one mono channel.

    Feed consecutive blocks with :meth:`feed`; read ``energy_db`` / ``flatness`` at the end.
    """

    sr: int
    config: VadConfig = field(default_factory=VadConfig)
    _carry: np.ndarray = field(init=False, repr=False)
    _energy: list[np.ndarray] = field(init=False, default_factory=list, repr=False)
    _flatness: list[np.ndarray] = field(init=False, default_factory=list, repr=False)
    _high_power: float = field(init=False, default=0.0)
    _total_power: float = field(init=False, default=0.0)
    n_samples: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        self.frame = max(round(self.config.frame_s * self.sr), 16)
        self.hop = max(round(self.config.hop_s * self.sr), 1)
        self.n_fft = 1 << int(np.ceil(np.log2(self.frame)))
        self.window = np.hanning(self.frame).astype(np.float32)
        freqs = np.fft.rfftfreq(self.n_fft, d=1.0 / self.sr)
        low, high = self.config.band_hz
        # contiguous bin ranges as slices: views, not fancy-index copies
        in_band = np.flatnonzero((freqs >= low) & (freqs <= min(high, self.sr / 2)))
        self.band = slice(int(in_band[0]), int(in_band[-1]) + 1)
        self.high = slice(int(np.searchsorted(freqs, 4000.0, side="right")), len(freqs))
        self._carry = np.zeros(0, dtype=np.float32)

    def feed(self, block: np.ndarray) -> None:
        """Add the next ``(n,)`` samples of the channel."""
        block = np.asarray(block, dtype=np.float32)
        self.n_samples += len(block)
        buffer = np.concatenate([self._carry, block]) if len(self._carry) else block
        if len(buffer) < self.frame:
            self._carry = buffer.copy()
            return
        n_frames = 1 + (len(buffer) - self.frame) // self.hop
        frames = sliding_window_view(buffer, self.frame)[:: self.hop][:n_frames]
        step = self.config.chunk_frames
        for i in range(0, n_frames, step):
            self._analyse(frames[i:i + step])
        self._carry = buffer[n_frames * self.hop:].copy()

    def _analyse(self, frames: np.ndarray) -> None:
        spectrum = scipy.fft.rfft(frames * self.window, n=self.n_fft, axis=1)
        power = spectrum.real ** 2 + spectrum.imag ** 2  # float32 (n_frames, n_bins)
        band = power[:, self.band] + 1e-12
        self._energy.append(10.0 * np.log10(band.mean(axis=1) * 2.0 / self.frame))
        self._flatness.append(np.exp(np.log(band).mean(axis=1)) / band.mean(axis=1))
        self._high_power += float(power[:, self.high].sum())
        self._total_power += float(power.sum())

    @property
    def energy_db(self) -> np.ndarray:
        """float32 ``(n_frames,)`` band energy per frame."""
        return np.concatenate(self._energy) if self._energy else np.zeros(0, np.float32)

    @property
    def flatness(self) -> np.ndarray:
        """float32 ``(n_frames,)`` spectral flatness per frame, in (0, 1]."""
        return np.concatenate(self._flatness) if self._flatness else np.zeros(0, np.float32)

    @property
    def high_band_share(self) -> float:
        """Share of the channel's power above 4 kHz (0 when the rate cannot carry any)."""
        return self._high_power / self._total_power if self._total_power > 0 else 0.0

    def regions(self) -> list[Region]:
        """Speech regions ``[(start_s, end_s), ...]`` of everything fed so far."""
        return decide(self.energy_db, self.flatness, sr=self.sr, frame=self.frame,
                      hop=self.hop, config=self.config, n_samples=self.n_samples)


def decide(
    energy_db: np.ndarray,
    flatness: np.ndarray,
    *,
    sr: int,
    frame: int,
    hop: int,
    config: VadConfig,
    n_samples: int,
) -> list[Region]:
    """Turn per-frame energy and flatness into smoothed speech regions (seconds)."""
    if len(energy_db) == 0:
        return []
    floor = float(np.percentile(energy_db, 10))
    loud = float(np.percentile(energy_db, 99))
    threshold = max(floor + config.energy_margin_db, loud - config.dynamic_range_db,
                    config.min_level_dbfs)
    speech = (energy_db > threshold) & (
        (flatness < config.flatness_max) | (energy_db > floor + config.loud_override_db))
    # Hangover: a frame is speech if any speech frame started within the last `hang` frames.
    hang = round(config.hangover_s / config.hop_s)
    if hang > 0 and speech.any():
        counts = np.cumsum(np.concatenate([[0], speech.astype(np.int32)]))
        lagged = np.concatenate([np.zeros(hang, np.int64), counts[:-hang - 1]])
        speech = (counts[1:] - lagged[: len(speech)]) > 0
    runs = _runs(speech)
    duration = n_samples / sr
    regions = [(s * hop / sr, min((e - 1) * hop / sr + frame / sr, duration)) for s, e in runs]
    return clean_regions(regions, min_speech_s=config.min_speech_s,
                         min_silence_s=config.min_silence_s)


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """``[(start, stop), ...]`` frame index runs where ``mask`` is true (stop exclusive)."""
    padded = np.concatenate([[False], mask, [False]])
    edges = np.flatnonzero(np.diff(padded.astype(np.int8)))
    return list(zip(edges[::2].tolist(), edges[1::2].tolist(), strict=True))


def clean_regions(regions: Iterable[Region], *, min_speech_s: float,
                  min_silence_s: float) -> list[Region]:
    """Bridge gaps shorter than ``min_silence_s``, then drop regions shorter than
    ``min_speech_s``. Input must be sorted and non-overlapping."""
    merged: list[list[float]] = []
    for start, end in regions:
        if merged and start - merged[-1][1] < min_silence_s:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    return [(round(s, 4), round(e, 4)) for s, e in merged if e - s >= min_speech_s]


def detect_speech(signal: np.ndarray, sr: int, *,
                  config: VadConfig = VadConfig()) -> list[Region]:
    """Speech regions of a mono ``(n,)`` signal held in memory (see :class:`FrameAnalyser`
    for long recordings)."""
    analyser = FrameAnalyser(sr, config)
    analyser.feed(signal)
    return analyser.regions()


def is_narrowband(sr: int, high_band_share: float) -> bool:
    """Phone-like audio: a low sample rate, or (almost) no energy above 4 kHz."""
    return sr <= NARROWBAND_MAX_SR or high_band_share < NARROWBAND_HIGH_SHARE


def windows(regions: Sequence[Region], *, min_s: float = 1.0, max_s: float = 4.0) -> list[Region]:
    """Cut speech regions into utterance-length windows for scoring.

    Regions shorter than ``min_s`` are not scored (they still count as talk time); longer than
    ``max_s`` are split into equal parts no longer than ``max_s``.
    """
    if not 0 < min_s <= max_s:
        raise ValueError("windows needs 0 < min_s <= max_s")
    out: list[Region] = []
    for start, end in regions:
        length = end - start
        if length < min_s:
            continue
        parts = int(np.ceil(length / max_s - 1e-9))
        step = length / parts
        out.extend((round(start + k * step, 4), round(start + (k + 1) * step, 4))
                   for k in range(parts))
    return out


def total_duration(regions: Iterable[Region]) -> float:
    return float(sum(e - s for s, e in regions))
