"""The two streaming passes over a recording that scoring makes: voice activity per role
channel (:func:`voice_pass`), then features of the utterance windows (:func:`window_features`).

Memory stays bounded for hour-long recordings: the VAD streams the file block by block and the
features are computed per block of windows (with context overlap), so only one block of audio
is in memory at a time. A recording that cannot be decoded raises :class:`CallError`, the
error of every recording that cannot be scored (``etl.scoring.recording``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf

from etl.audio.decode import load_audio
from etl.audio.intervals import Region
from etl.audio.vad import FrameAnalyser, windows
from etl.features.extraction import extract_segments
from etl.features.preparation import channel_level
from etl.features.specs import LEVEL_NORM, FeatureSpec
from etl.scoring.call_metrics import RoleEnergy
from etl.scoring.config import ScoringConfig


class CallError(ValueError):
    """A recording that cannot be scored (the reason is stored in ``calls.error``)."""


def _block_frames(sr: int, channels: int, block_s: float) -> int:
    # cap a block at ~8 M samples (32 MB float32) whatever the rate and channel count
    return max(int(sr), min(int(block_s * sr), 8_000_000 // max(channels, 1)))


def _iter_blocks(path: Path, *, block_frames: int) -> Iterable[tuple[np.ndarray, int]]:
    """Yield ``((n, channels) float32, sr)`` blocks; non-soundfile formats decode once."""
    try:
        handle = sf.SoundFile(str(path))
    except Exception:  # noqa: BLE001 - MP3/others soundfile cannot open: decode via fallback
        signal, sr = load_audio(path, mono=False)
        data = np.atleast_2d(signal).T
        for start in range(0, len(data), block_frames):
            yield data[start:start + block_frames], sr
        return
    with handle:
        sr, declared, decoded = handle.samplerate, handle.frames, 0
        try:
            for block in handle.blocks(blocksize=block_frames, dtype="float32", always_2d=True):
                decoded += len(block)
                yield block, sr
        except sf.LibsndfileError as exc:  # e.g. "flac decoder lost sync" where a copy stops
            detail = str(exc).removeprefix("Error : ").splitlines()[0].rstrip(".")
            try:  # where the decoder stopped, inside the block that failed
                decoded = max(decoded, handle.tell())
            except sf.LibsndfileError:
                pass
            if decoded < declared:
                raise _truncated(declared, decoded, sr, detail=detail) from exc
            raise CallError(f"cannot decode: {detail}") from exc
        # a header is trusted for its length only to this tolerance (encoder padding)
        if declared - decoded > sr // 10:
            raise _truncated(declared, decoded, sr)


def _truncated(declared: int, decoded: int, sr: int, *, detail: str = "") -> CallError:
    """The reason of a recording whose frames stop before its header says they do: a copy
    cut short (what :func:`etl.audio.decode.read_info` catches for WAV, found while decoding)."""
    return CallError(
        f"truncated recording: its header declares {declared / sr:.2f} s of audio but only "
        f"{decoded / sr:.2f} s decode{f' ({detail})' if detail else ''}; deliver the complete "
        "file (write it, then rename it into place)")


def _read_span(path: Path, *, start_s: float, end_s: float) -> tuple[np.ndarray, int]:
    """``(n, channels)`` float32 of ``[start_s, end_s)``."""
    signal, sr = load_audio(path, mono=False, start_s=max(start_s, 0.0),
                            duration_s=max(end_s - max(start_s, 0.0), 0.0))
    return np.atleast_2d(signal).T, sr


LEVEL_FRAME_S = float(LEVEL_NORM["frame_s"])


@dataclass(slots=True)
class VoicePass:
    """Pass 1 over a recording: one VAD analyser per role channel, fed block by block.

    ``first_block`` keeps the role channels of a file that fits one block (so it is decoded
    once: scoring's feature pass reuses them); it is empty for longer files.
    """

    analysers: dict[int, FrameAnalyser]
    roles: dict[int, str]
    sr: int
    n_frames: int
    block_frames: int
    first_block: dict[int, np.ndarray]
    # per role channel: mean-square energy of consecutive LEVEL_FRAME_S frames of the whole
    # channel, so every block's features get the channel's level gain (`channel_level`)
    frame_energy: dict[int, np.ndarray] = field(default_factory=dict)

    @property
    def duration_s(self) -> float:
        return self.n_frames / self.sr

    def speech(self) -> dict[str, list[Region]]:
        """Speech regions per role."""
        return {self.roles[ch]: a.regions() for ch, a in self.analysers.items()}

    def energy(self) -> dict[str, RoleEnergy]:
        """Frame energies per role (what loudness and speaking rate are computed from)."""
        return {self.roles[ch]: RoleEnergy(a.energy_db, hop_s=a.hop / self.sr,
                                           frame_s=a.frame / self.sr)
                for ch, a in self.analysers.items()}


def voice_pass(path: Path, *, roles: Mapping[int, str], channels: int, sample_rate: int,
               config: ScoringConfig) -> VoicePass:
    """Stream ``path`` through a :class:`~etl.audio.vad.FrameAnalyser` per role channel.

    Raises
    ------
    CallError
        nothing could be decoded, or fewer frames than the header declares (truncated).
    """
    block_frames = _block_frames(sample_rate, channels, config.block_s)
    analysers: dict[int, FrameAnalyser] = {}
    first_block: dict[int, np.ndarray] = {}
    energies: dict[int, list[np.ndarray]] = {ch: [] for ch in roles}
    n_frames = 0
    sr = sample_rate
    for index, (block, sr) in enumerate(_iter_blocks(path, block_frames=block_frames)):
        if not analysers:
            analysers = {ch: FrameAnalyser(sr, config.vad) for ch in roles}
        frame = max(1, int(LEVEL_FRAME_S * sr))
        for ch, analyser in analysers.items():
            channel = np.ascontiguousarray(block[:, ch])
            analyser.feed(channel)
            n = len(channel) // frame
            energies[ch].append(np.square(channel[: n * frame].reshape(n, frame),
                                          dtype=np.float32).mean(axis=1))
            if index == 0:
                first_block[ch] = channel
        n_frames += len(block)
        if index == 1:
            first_block = {}
    if n_frames == 0:
        raise CallError("no audio samples could be decoded")
    return VoicePass(analysers, dict(roles), sr, n_frames, block_frames, first_block,
                     {ch: np.concatenate(parts) for ch, parts in energies.items()})


@dataclass(frozen=True, slots=True)
class WindowFeatures:
    """The utterance windows of a call and their features.

    ``windows`` ``[(role, start_s, end_s), ...]`` (n); ``X`` float32 ``(n, n_features)``;
    ``valid`` bool ``(n,)`` (False: the window had too little signal for features).
    """

    windows: list[tuple[str, float, float]]
    X: np.ndarray
    valid: np.ndarray


def window_features(path: Path, voice: VoicePass, speech: Mapping[str, Sequence[Region]], *,
                    spec: FeatureSpec, config: ScoringConfig) -> WindowFeatures:
    """Features of every role's windows, decoded block by block with ``config.context_s`` of
    context on both sides (a one-block file reuses the block the VAD pass kept)."""
    roles, sr, duration = voice.roles, voice.sr, voice.duration_s
    level_norm = spec.params.get("level_norm")
    levels = ({ch: channel_level(voice.frame_energy[ch], level_norm) for ch in roles}
              if level_norm and float(level_norm["frame_s"]) == LEVEL_FRAME_S
              and voice.frame_energy else {})
    wins = {ch: windows(speech[roles[ch]], min_s=config.min_window_s,
                        max_s=config.max_window_s, bridge_s=config.window_bridge_s)
            for ch in roles}
    rows: list[tuple[str, float, float]] = []
    feats: list[np.ndarray] = []
    valid_parts: list[np.ndarray] = []
    single = bool(voice.first_block)
    block_s = voice.block_frames / sr
    starts = np.arange(0.0, duration, block_s) if not single else np.array([0.0])
    for b0 in starts:
        b1 = duration if single else b0 + block_s
        todo = {ch: [w for w in ws if b0 <= w[0] < b1] for ch, ws in wins.items()}
        if not any(todo.values()):
            continue
        if single:
            channels, offset = voice.first_block, 0.0
        else:
            offset = max(b0 - config.context_s, 0.0)
            end = min(b1 + config.max_window_s + config.context_s, duration)
            data, _ = _read_span(path, start_s=offset, end_s=end)
            channels = {ch: np.ascontiguousarray(data[:, ch]) for ch in todo}
        for ch, ws in todo.items():
            if not ws:
                continue
            X, valid = extract_segments(channels[ch], sr, spec,
                                        [(s - offset, e - offset) for s, e in ws],
                                        level_dbfs=levels.get(ch))
            feats.append(X)
            valid_parts.append(valid)
            rows.extend((roles[ch], s, e) for s, e in ws)
    voice.first_block.clear()
    if not rows:
        return WindowFeatures([], np.zeros((0, len(spec.feature_names)), np.float32),
                              np.zeros(0, bool))
    return WindowFeatures(rows, np.concatenate(feats), np.concatenate(valid_parts))
