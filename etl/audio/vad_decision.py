"""From per-frame numbers to speech regions: the frame decision (energy and flatness, or another
detector's candidates), the rejection of tones, music and background talk, the hangover and the
clean-up of short gaps and bursts. ``etl.audio.vad`` describes each number and each rejection;
docs/vad.md has the measurements behind the thresholds.
"""

from __future__ import annotations

from collections.abc import Iterable
from itertools import pairwise
from typing import TYPE_CHECKING

import numpy as np

from etl.audio.intervals import Region, union_regions

if TYPE_CHECKING:  # the config's home imports this module for FrameAnalyser.regions
    from etl.audio.vad import VadConfig


def decide(
    energy_db: np.ndarray,
    flatness: np.ndarray,
    *,
    sr: int,
    frame: int,
    hop: int,
    config: VadConfig,
    n_samples: int,
    tone: np.ndarray | None = None,
    tone_spread: np.ndarray | None = None,
    persistent: np.ndarray | None = None,
    candidates: np.ndarray | None = None,
) -> list[Region]:
    """Turn per-frame numbers (all ``(n_frames,)``) into smoothed speech regions (seconds).

    ``candidates`` (bool) replaces the energy/flatness frame decision (another detector's);
    ``tone``, ``tone_spread`` and ``persistent`` feed the non-speech rejections when given.
    """
    if len(energy_db) == 0:
        return []
    floor = float(np.percentile(energy_db, 10))
    loud = float(np.percentile(energy_db, 99))
    # relative to the channel's own loud level; the absolute floor only against dither
    lowest = max(loud - config.dynamic_range_db, config.min_level_dbfs)
    if candidates is None:
        speech = (energy_db > max(floor + config.energy_margin_db, lowest)) & (
            (flatness < config.flatness_max) | (energy_db > floor + config.loud_override_db))
    else:
        speech = candidates & (energy_db > lowest)
    spread = np.zeros(0)
    foreground = 0.0
    if config.reject_nonspeech and speech.any():
        spread = _level_spread(energy_db, max(round(config.babble_context_s / config.hop_s), 2))
        foreground = float(np.percentile(energy_db[speech], 99))
        speech &= ~_nonspeech_frames(tone, tone_spread, persistent, spread, config=config,
                                     n=len(speech))
        speech &= ~_background_frames(energy_db, spread, foreground, config=config)
    # Hangover: a frame is speech if any speech frame started within the last `hang` frames.
    hang = round(config.hangover_s / config.hop_s)
    if hang > 0 and speech.any():
        counts = np.cumsum(np.concatenate([[0], speech.astype(np.int32)]))
        lagged = np.concatenate([np.zeros(hang, np.int64), counts[:-hang - 1]])
        speech = (counts[1:] - lagged[: len(speech)]) > 0
    runs = _runs(speech)
    duration = n_samples / sr
    regions = [(s * hop / sr, min((e - 1) * hop / sr + frame / sr, duration)) for s, e in runs]
    regions = clean_regions(regions, min_speech_s=config.min_speech_s,
                            min_silence_s=config.min_silence_s)
    return regions


def _nonspeech_frames(tone: np.ndarray | None, tone_spread: np.ndarray | None,
                      persistent: np.ndarray | None, level_spread: np.ndarray, *,
                      config: VadConfig, n: int) -> np.ndarray:
    """bool ``(n,)``: tone frames (and the two frames either side, which straddle the tone's
    edges), and frames while music plays."""
    out = np.zeros(n, dtype=bool)
    if tone is not None and tone_spread is not None:
        tones = (tone[:n] > config.tone_max) & (tone_spread[:n] < config.tone_spread_max)
        out |= _centred_mean(tones.astype(np.float64), 5) > 0
    if persistent is not None and len(persistent):
        width = max(round(config.music_context_s / config.hop_s), 1)
        kernel = np.ones(width) / width
        smoothed = np.convolve(persistent[:n].astype(np.float64), kernel, mode="same")
        held = smoothed > config.music_max
        music = held & (level_spread[:n] < config.music_modulation_db)
        if config.edges and music.any():
            # the step from silence into (or out of) the music is no syllable, but it makes the
            # level's std large for half a context around it: there, next to a second or more
            # of music, held notes are enough
            music |= held & _near_runs(music, width, 2 * width)
        out |= _fill_gaps(music, round(config.music_gap_s / config.hop_s), 2 * width)
    return out


def _fill_gaps(mask: np.ndarray, max_frames: int, min_run: int) -> np.ndarray:
    """``mask`` with its runs of False shorter than ``max_frames`` set when runs of True at
    least ``min_run`` long bound them on both sides (breaks in a long stretch of music, not
    the gaps between stray music-like frames of held vowels)."""
    if max_frames <= 0 or not mask.any():
        return mask
    out = mask.copy()
    runs = [(a, b) for a, b in _runs(mask) if b - a >= min_run]
    for (_, stop), (start, _) in pairwise(runs):
        if start - stop < max_frames:
            out[stop:start] = True
    return out


def _centred_mean(x: np.ndarray, width: int) -> np.ndarray:
    """Mean of ``x`` over a centred window of ``width`` frames (shorter at the ends)."""
    counts = np.concatenate([[0.0], np.cumsum(x, dtype=np.float64)])
    idx = np.arange(len(x))
    lo = np.clip(idx - width // 2, 0, len(x))
    hi = np.clip(idx + width - width // 2, 0, len(x))
    return (counts[hi] - counts[lo]) / np.maximum(hi - lo, 1)


def _level_spread(energy_db: np.ndarray, width: int) -> np.ndarray:
    """float64 ``(n,)`` std of the frame energy (dB) over a centred window of ``width``."""
    e = energy_db.astype(np.float64)
    mean = _centred_mean(e, width)
    return np.sqrt(np.maximum(_centred_mean(e * e, width) - mean * mean, 0.0))


def _background_frames(energy_db: np.ndarray, level_spread: np.ndarray, foreground: float, *,
                       config: VadConfig) -> np.ndarray:
    """bool ``(n,)``: frames of background talk (or other steady sound) under the speaker.

    One voice's energy swings by 10-20 dB within a second (syllables, pauses); a crowd of
    voices, like music or a fan, fills those dips. A frame is background when its level moves
    little around it (std over ``babble_context_s``) and it sits ``babble_below_db`` under the
    channel's ``foreground`` level (p99 of the speech candidates: the speaker's loud syllables): a steady *foreground*
    (speech on a noisy line) is kept.
    """
    quiet = energy_db < foreground - config.babble_below_db
    out = (level_spread < config.babble_modulation_db) & quiet
    if config.edges and out.any():
        # a crowd fading in or out (or cut off) is not yet (or no longer) steady: within half a
        # context of two seconds or more of it, no louder than it is enough (a voice starting
        # there rises above it)
        width = max(round(config.babble_context_s / config.hop_s), 2)
        for start, stop in _runs(out):
            if stop - start >= 2 * width:
                level = float(np.percentile(energy_db[start:stop], 90))
                lo, hi = max(start - width // 2, 0), stop + width // 2
                out[lo:hi] |= quiet[lo:hi] & (energy_db[lo:hi] <= level)
    return out


def _near_runs(mask: np.ndarray, width: int, min_run: int) -> np.ndarray:
    """bool ``(n,)``: frames within ``width // 2`` of a run of ``mask`` at least ``min_run``
    frames long (a stretch of non-speech long enough to be sure of, not stray frames)."""
    out = np.zeros(len(mask), dtype=bool)
    for start, stop in _runs(mask):
        if stop - start >= min_run:
            out[max(start - width // 2, 0):stop + width // 2] = True
    return out


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """``[(start, stop), ...]`` frame index runs where ``mask`` is true (stop exclusive)."""
    padded = np.concatenate([[False], mask, [False]])
    edges = np.flatnonzero(np.diff(padded.astype(np.int8)))
    return list(zip(edges[::2].tolist(), edges[1::2].tolist(), strict=True))


def clean_regions(regions: Iterable[Region], *, min_speech_s: float,
                  min_silence_s: float) -> list[Region]:
    """Bridge gaps shorter than ``min_silence_s``, then drop regions shorter than
    ``min_speech_s``."""
    merged = union_regions(regions, bridge_s=min_silence_s)
    return [(round(s, 4), round(e, 4)) for s, e in merged if e - s >= min_speech_s]
