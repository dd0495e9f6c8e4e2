"""Scoring one recording: voice activity per role, utterance windows, features, probabilities,
summary, conversation metrics and escalation, as a :class:`CallResult`.

:func:`score_recording` is pure compute: a function of the audio file, the model and the
:class:`~etl.scoring.config.ScoringConfig`, with no database. A recording that cannot be scored
raises :class:`~etl.scoring.audio_passes.CallError` (or ``AudioError``) with the reason the
runner stores. The runners in ``etl/runs`` claim calls, call it, and write what it returns
(``etl.runs.results``). The streaming passes over the audio are ``etl.scoring.audio_passes``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from etl.audio.decode import AudioInfo, read_info, sha256_file
from etl.audio.intervals import Region
from etl.audio.vad import is_narrowband
from etl.corpora.labels import is_negative_class
from etl.scoring.audio_passes import (
    CallError,
    VoicePass,
    WindowFeatures,
    voice_pass,
    window_features,
)
from etl.scoring.call_metrics import CallEvent, CallMetrics, compute_call_metrics
from etl.scoring.config import ScoringConfig
from etl.scoring.escalation import Escalation, evaluate, metric_values
from etl.scoring.role_prior import AGENT_ROLE, apply_negative_prior
from etl.scoring.summaries import ScoredSegment, SummaryStats, summarise_call

if TYPE_CHECKING:
    from etl.training.loading import LoadedModel

log = logging.getLogger(__name__)


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


def score_recording(
    path: Path,
    *,
    model: LoadedModel,
    channel_roles: Mapping[str, str] | None = None,
    config: ScoringConfig = ScoringConfig(),  # noqa: B008 - frozen: safe as a default argument
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
