"""Scoring one recording: voice activity per role, utterance windows, features, probabilities,
summary, conversation metrics and escalation, as a :class:`CallResult`.

:func:`score_recording` is pure compute: a function of the audio file, the model and the
:class:`ScoringConfig`, with no database. A recording that cannot be scored raises
:class:`CallError` (or ``AudioError``) with the reason the runner stores. The runners in
``etl/runs`` claim calls, call it, and write what it returns (``etl.runs.results``).

Memory stays bounded for hour-long recordings: the VAD streams the file block by block and the
features are computed per block of windows (with context overlap), so only one block of audio
is in memory at a time.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import soundfile as sf

from etl.audio.decode import AudioInfo, load_audio, read_info, sha256_file
from etl.audio.intervals import Region
from etl.audio.vad import FrameAnalyser, VadConfig, is_narrowband, windows
from etl.corpora.labels import is_negative_class
from etl.features.extraction import extract_segments
from etl.features.preparation import channel_level
from etl.features.specs import LEVEL_NORM, FeatureSpec
from etl.scoring.call_metrics import (
    CallEvent,
    CallMetrics,
    MetricsConfig,
    RoleEnergy,
    compute_call_metrics,
)
from etl.scoring.escalation import (
    Escalation,
    EscalationRule,
    OperatingPoint,
    evaluate,
    metric_values,
    resolve_operating_point,
    rules_as_data,
)
from etl.scoring.role_prior import AGENT_NEGATIVE_PRIOR, AGENT_ROLE, apply_negative_prior
from etl.scoring.summaries import ScoredSegment, SummaryStats, summarise_call

if TYPE_CHECKING:
    from etl.training.registry import LoadedModel

log = logging.getLogger(__name__)


class CallError(ValueError):
    """A recording that cannot be scored (the reason is stored in ``calls.error``)."""


# --------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ScoringConfig:
    """How calls are cut, scored and summarised.

    Attributes
    ----------
    stereo_roles
        Role per channel of a two-channel file without explicit roles (left, right).
    mono_role
        Role of a single-channel file.
    min_window_s, max_window_s, window_bridge_s
        Utterance windows scored on their own (`etl.audio.vad.windows`): speech regions closer
        than ``window_bridge_s`` form one utterance; shorter utterances are talk time but not
        scored.
    max_duration_s
        Longer recordings fail ("absurdly long") instead of tying up a worker.
    block_s
        Audio decoded per block (bounds memory on long recordings).
    settle_s
        A recording (or ``calls.csv``) changed less than this long ago is left for the next run
        (`etl.runs.inbox.discover_calls`): the nightly inbox waits for copies to finish; 0 (a
        folder named on the command line) takes every file as it is.
    stale_claim_minutes
        A claim older than this is considered abandoned (its worker died) and is taken over.
    rules
        Escalation rules; None (not configured: what :func:`etl.scoring.escalation.load_rules`
        returns when nothing is set) = the model's operating point, else the built-in defaults
        (models trained without one).
    confidence_floor
        Segments whose top probability is below it are abstained; None = the model's operating
        point (0 for models without one).
    allow_channel_mismatch
        Score phone (narrowband) audio with a studio-trained model anyway, with a warning; by
        default such a call fails, because a studio model on phone audio flags almost every call.
    metrics
        Thresholds of the conversation metrics (turns, interruptions, long silences, speaking
        rate: :mod:`etl.scoring.call_metrics`).
    agent_negative_prior
        Share of the agent's speech expected to be negative; the agent's segment probabilities
        are moved from the models' class-balanced prior to it (:mod:`etl.scoring.role_prior`).
        None scores agents with the training prior.
    """

    stereo_roles: tuple[str, str] = ("agent", "customer")
    mono_role: str = "customer"
    min_window_s: float = 0.5
    max_window_s: float = 4.0
    window_bridge_s: float = 0.5
    min_duration_s: float = 0.5
    max_duration_s: float = 3 * 3600.0
    block_s: float = 600.0
    settle_s: float = 0.0
    context_s: float = 0.5
    vad: VadConfig = field(default_factory=VadConfig)
    streak_gap_s: float = 2.0
    stale_claim_minutes: float = 30.0
    rules: tuple[EscalationRule, ...] | None = None
    retry_failed: bool = False
    confidence_floor: float | None = None
    allow_channel_mismatch: bool = False
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    agent_negative_prior: float | None = AGENT_NEGATIVE_PRIOR

    def options(self) -> dict[str, Any]:
        """JSON-ready record stored in ``batches.options`` (``"rules": "model"`` = the model's
        operating point or, for a model without one, the built-in defaults)."""
        data = asdict(self)
        data["rules"] = "model" if self.rules is None else rules_as_data(self.rules)
        return data

    def operating_point(self, model: LoadedModel) -> OperatingPoint:
        """Rules and confidence floor for ``model`` (see ``rules`` and ``confidence_floor``)."""
        return resolve_operating_point(self.rules, model_calibration(model),
                                       confidence_floor=self.confidence_floor)


def model_calibration(model: object) -> Mapping[str, Any] | None:
    """The calibration record of a loaded model (None for models trained without one)."""
    record = getattr(model, "calibration", None)
    if record is None:
        params = getattr(model, "params", None)
        record = params.get("calibration") if isinstance(params, Mapping) else None
    return record if isinstance(record, Mapping) else None


def resolve_roles(channels: int, explicit: Mapping[str, str], *,
                  config: ScoringConfig) -> dict[int, str]:
    """Channel index -> role for a file with ``channels`` channels."""
    if explicit:
        roles = {int(k): v for k, v in explicit.items() if int(k) < channels}
        if not roles:
            raise CallError(f"calls.csv names channels {sorted(explicit)} but the file has "
                            f"{channels} channel(s)")
        if len(set(roles.values())) < len(roles):
            raise CallError(f"calls.csv gives channels {dict(sorted(roles.items()))} one role "
                            f"twice: name each role once (channel_roles)")
        return roles
    if channels == 1:
        return {0: config.mono_role}
    if channels == 2:
        return {0: config.stereo_roles[0], 1: config.stereo_roles[1]}
    raise CallError(f"{channels} channels and no channel roles: add channel_roles to calls.csv")


# --------------------------------------------------------------------------------------------
# Scoring one recording (pure compute)
# --------------------------------------------------------------------------------------------


@dataclass(slots=True)
class CallResult:
    """Everything scoring one recording produces (written by ``etl.runs.results.write_result``)."""

    sample_rate: int
    channels: int
    duration_s: float
    sha256: str
    roles: dict[int, str]
    bandwidth: str
    warnings: list[str]
    speech: dict[str, list[Region]]
    segments: list[ScoredSegment]
    summary: SummaryStats
    escalation: Escalation | None
    metrics: CallMetrics
    events: list[CallEvent]
    seconds: dict[str, float] = field(default_factory=dict)
    confidence_floor: float = 0.0
    rules_source: str = "defaults"


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


def score_recording(
    path: Path,
    *,
    model: LoadedModel,
    channel_roles: Mapping[str, str] | None = None,
    config: ScoringConfig = ScoringConfig(),
) -> CallResult:
    """Score one recording with ``model``: VAD per role, windows, features, probabilities.

    Raises
    ------
    AudioError, CallError
        empty / corrupt / unreadable, too long or too short, silent, or no usable channels.
    """
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    path = Path(path)
    info = _scorable_info(path, config)
    roles = resolve_roles(info.channels, channel_roles or {}, config=config)
    digest = sha256_file(path)

    # Pass 1: stream the file through one VAD analyser per role channel.
    voice = voice_pass(path, roles=roles, channels=info.channels, sample_rate=info.sample_rate,
                       config=config)
    speech = _speech_of(voice)
    timings["vad"] = time.perf_counter() - t0
    narrow, warnings = _bandwidth(path, voice, model=model, config=config)

    # Pass 2: features per role for its windows, block by block with context on both sides.
    t1 = time.perf_counter()
    features = window_features(path, voice, speech, spec=model.feature_spec, config=config)
    timings["features"] = time.perf_counter() - t1

    t2 = time.perf_counter()
    point = config.operating_point(model)
    segments = score_windows(features, model=model, confidence_floor=point.confidence_floor,
                             agent_negative_prior=config.agent_negative_prior)
    timings["predict"] = time.perf_counter() - t2

    summary = summarise_call(segments, speech=speech, duration_s=voice.duration_s,
                             streak_gap_s=config.streak_gap_s)
    t3 = time.perf_counter()
    # the VAD's frame energies: loudness and speaking rate need no second decode
    metrics, events = compute_call_metrics(segments, speech=speech, energy=voice.energy(),
                                           duration_s=voice.duration_s, config=config.metrics)
    timings["metrics"] = time.perf_counter() - t3
    return CallResult(
        sample_rate=voice.sr, channels=info.channels, duration_s=voice.duration_s, sha256=digest,
        roles=roles, bandwidth="narrowband" if narrow else "wideband", warnings=warnings,
        speech=speech, segments=segments, summary=summary,
        escalation=evaluate(metric_values(summary, metrics), point.rules), metrics=metrics,
        events=events, seconds=timings,
        confidence_floor=point.confidence_floor, rules_source=point.source)


def _scorable_info(path: Path, config: ScoringConfig) -> AudioInfo:
    """The header of ``path``; CallError when it is missing, too long or too short."""
    if not path.is_file():
        raise CallError(f"file not found: {path}")
    info = read_info(path)
    if info.duration_s > config.max_duration_s:
        raise CallError(f"recording is {info.duration_s / 3600:.1f} h long; the limit is "
                        f"{config.max_duration_s / 3600:.1f} h (ScoringConfig.max_duration_s)")
    if info.duration_s < config.min_duration_s:
        raise CallError(f"recording is only {info.duration_s:.2f} s long")
    return info


def _speech_of(voice: VoicePass) -> dict[str, list[Region]]:
    """Speech regions per role; CallError for digital silence or a call without speech."""
    loudest = max((float(a.energy_db.max()) for a in voice.analysers.values()
                   if a.energy_db.size), default=-200.0)
    if loudest < -100.0:  # dBFS in the speech band: nothing but (digital) silence
        raise CallError("silent recording (digital silence)")
    speech = voice.speech()
    if not any(speech.values()):
        raise CallError("no speech found (silent or noise-only recording)")
    return speech


def _bandwidth(path: Path, voice: VoicePass, *, model: LoadedModel,
               config: ScoringConfig) -> tuple[bool, list[str]]:
    """``(narrowband, warnings)``; CallError for phone audio and a studio model unless
    ``config.allow_channel_mismatch``."""
    high_share = float(np.mean([a.high_band_share for a in voice.analysers.values()]))
    narrow = is_narrowband(voice.sr, high_share)
    warnings: list[str] = []
    if narrow and model.feature_spec.channel == "studio":
        mismatch = (f"narrowband (phone) audio and studio-trained model {model.name} "
                    f"v{model.version}")
        if not config.allow_channel_mismatch:
            raise CallError(f"{mismatch}: score with a telephony model (ser train, the default, "
                            "makes one and sets production-telephony) or allow the mismatch")
        warnings.append(f"{mismatch}; retrain on telephony features to match")
        log.warning("%s: %s", path.name, warnings[-1])
    return narrow, warnings


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


def score_windows(features: WindowFeatures, *, model: LoadedModel, confidence_floor: float,
                  agent_negative_prior: float | None = None) -> list[ScoredSegment]:
    """Scored segments of the valid windows, sorted by (start, role); a window under the
    ``confidence_floor`` keeps its label but abstains (negative for nothing). The agent's
    windows are read with ``agent_negative_prior`` (:mod:`etl.scoring.role_prior`) when given."""
    segments: list[ScoredSegment] = []
    keep = np.flatnonzero(features.valid)
    if len(keep):
        # Per role (speaker) normalisation when the model uses it; a role with very few
        # segments is shrunk toward the model's training population (etl.training.normalise).
        roles = [features.windows[i][0] for i in keep]
        proba = np.asarray(model.predict_proba(features.X[keep], speakers=roles),
                           dtype=np.float64)
        if agent_negative_prior is not None:
            proba = apply_negative_prior(proba, model.classes,
                                         rows=np.array(roles) == AGENT_ROLE,
                                         negative_share=agent_negative_prior)
        best = proba.argmax(axis=1)
        for j, i in enumerate(keep):
            role, start, end = features.windows[i]
            label = model.classes[int(best[j])]
            # rounded as stored, so "confidence < floor" in the table is the abstain rule
            confidence = round(float(proba[j, best[j]]), 4)
            abstained = confidence < confidence_floor
            segments.append(ScoredSegment(
                role=role, start_s=round(start, 3), end_s=round(end, 3), emotion=label,
                confidence=confidence, is_negative=is_negative_class(label) and not abstained,
                probabilities={c: round(float(p), 4)
                               for c, p in zip(model.classes, proba[j], strict=True)},
                abstained=abstained))
    segments.sort(key=lambda seg: (seg.start_s, seg.role))
    return segments
