"""Labelled clips for generated calls (and tiny training corpora): loaded or synthesised.

A :class:`ClipBank` holds utterances at one rate, trimmed to their speech and levelled per actor,
indexed by actor and emotion: RAVDESS-named files from a folder (:meth:`ClipBank.from_folder`),
any labelled files (:meth:`ClipBank.from_paths`), or :mod:`etl.synthetic.speech` voices
generated on the fly (:meth:`ClipBank.synthetic`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from etl.audio.decode import AudioError, is_audio_path, load_audio, resample, trim_silence
from etl.corpora.labels import NEGATIVE_EMOTIONS
from etl.corpora.parsers import RAVDESS_EMOTIONS
from etl.synthetic.speech import RAVDESS_CODES, Voice, hash_seed, synthesize

_RAVDESS_NAME = re.compile(r"^(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)$")


@dataclass(frozen=True, slots=True)
class LabelledClip:
    """One labelled utterance, already at the generator rate and trimmed to its speech."""

    name: str
    actor: int
    emotion: str
    signal: np.ndarray  # float32 (n,)



class ClipBank:
    """Labelled clips indexed by actor and emotion.

    Build it with :meth:`from_folder` (RAVDESS file names) or :meth:`synthetic`.
    """

    def __init__(self, clips: Sequence[LabelledClip], *, sr: int) -> None:
        if not clips:
            raise ValueError("no labelled clips: the source folder has no RAVDESS-named audio")
        self.sr = sr
        self.clips = list(clips)
        self._by_key: dict[tuple[int, str], list[LabelledClip]] = {}
        self._by_emotion: dict[str, list[LabelledClip]] = {}
        for clip in self.clips:
            self._by_key.setdefault((clip.actor, clip.emotion), []).append(clip)
            self._by_emotion.setdefault(clip.emotion, []).append(clip)

    @property
    def actors(self) -> list[int]:
        return sorted({clip.actor for clip in self.clips})

    @property
    def emotions(self) -> list[str]:
        return sorted(self._by_emotion)

    def pick(self, rng: np.random.Generator, *, actor: int, emotion: str) -> LabelledClip:
        """A random clip of ``emotion`` by ``actor`` (any actor's if this one has none). A
        source without that emotion at all (CREMA-D has no calm) gives a clip of the same
        polarity (negative or not), this actor's if possible; the timeline names the clip's
        own emotion."""
        pool = self._by_key.get((actor, emotion)) or self._by_emotion.get(emotion)
        if not pool:
            negative = emotion in NEGATIVE_EMOTIONS
            alike = [c for c in self.clips if (c.emotion in NEGATIVE_EMOTIONS) == negative]
            pool = [c for c in alike if c.actor == actor] or alike
        if not pool:
            raise ValueError(f"no clip of emotion {emotion!r} or of its polarity; the source "
                             f"has {self.emotions}")
        return pool[int(rng.integers(len(pool)))]

    @classmethod
    def from_folder(
        cls,
        root: Path,
        *,
        actors: Iterable[int] | None = None,
        emotions: Iterable[str] | None = None,
        sr: int = 8000,
        top_db: float = 30.0,
    ) -> ClipBank:
        """Load RAVDESS-named clips (``MM-VC-EE-II-SS-RR-AA.ext``) under ``root``, recursively.

        Clips are resampled to ``sr`` and trimmed to their speech (``top_db`` below the peak) so
        that the timeline marks speech, not the studio silence around it.
        """
        root = Path(root)
        if not root.is_dir():
            raise ValueError(f"clip source {root} is not a folder")
        wanted_actors = set(actors) if actors is not None else None
        wanted_emotions = set(emotions) if emotions is not None else None
        sources: list[tuple[str, int, str, Path]] = []
        for path in sorted(p for p in root.rglob("*") if p.is_file() and is_audio_path(p)):
            match = _RAVDESS_NAME.match(path.stem)
            if not match or match.group(3) not in RAVDESS_EMOTIONS:
                continue
            actor, emotion = int(match.group(7)), RAVDESS_EMOTIONS[match.group(3)]
            if (wanted_actors is not None and actor not in wanted_actors) or (
                    wanted_emotions is not None and emotion not in wanted_emotions):
                continue
            sources.append((path.stem, actor, emotion, path))
        return cls.from_paths(sources, sr=sr, top_db=top_db)

    @classmethod
    def from_paths(
        cls,
        sources: Iterable[tuple[str, int, str, Path]],
        *,
        sr: int = 8000,
        top_db: float = 30.0,
    ) -> ClipBank:
        """Load ``(name, actor, canonical emotion, path)`` clips, resampled to ``sr`` and trimmed
        to their speech (``top_db`` below the peak) so that the timeline marks speech, not the
        studio silence around it; each actor levelled (:func:`level_actors`)."""
        clips: list[LabelledClip] = []
        for name, actor, emotion, path in sources:
            try:
                signal, _ = load_audio(Path(path), sr=sr, mono=True)
            except AudioError:
                continue  # one unreadable clip must not stop the generator
            signal = trim_silence(signal, sr, top_db=top_db)
            if len(signal) < int(0.3 * sr):
                continue
            clips.append(LabelledClip(name, int(actor), emotion, signal))
        return cls(level_actors(clips), sr=sr)

    @classmethod
    def synthetic(
        cls,
        *,
        actors: Iterable[int] = range(1, 9),
        emotions: Iterable[str] = tuple(RAVDESS_CODES),
        per_emotion: int = 3,
        sr: int = 8000,
    ) -> ClipBank:
        """Clips from :func:`etl.synthetic.speech.synthesize` (deterministic), ``per_emotion`` per actor."""
        clips: list[LabelledClip] = []
        for actor in actors:
            voice = Voice.for_actor(actor)
            for emotion in emotions:
                for k in range(per_emotion):
                    seed = hash_seed("callgen", actor, emotion, k)
                    duration = 1.6 + (seed % 1000) / 1000.0  # 1.6-2.6 s
                    # synthesise at 16 kHz (formants above 4 kHz matter for the studio variant)
                    signal = synthesize(emotion, voice=voice, seed=seed, duration_s=duration,
                                        sr=16000)
                    signal = resample(signal, 16000, sr) if sr != 16000 else signal
                    signal = trim_silence(signal, sr, top_db=30.0)
                    clips.append(LabelledClip(f"synth-{actor:02d}-{emotion}-{k}", actor,
                                              emotion, signal))
        return cls(level_actors(clips), sr=sr)


def level_actors(clips: Sequence[LabelledClip], *,
                 target_dbfs: float = -24.0) -> list[LabelledClip]:
    """One gain per actor so that actor's median clip RMS sits at ``target_dbfs``.

    Studio corpora are recorded at very different levels per actor (some RAVDESS calm clips sit
    near -60 dBFS); a phone line's AGC evens that out. One gain per actor keeps the loudness
    differences between that actor's emotions, which are part of what a model learns.
    """
    rms_db: dict[int, list[float]] = {}
    for clip in clips:
        rms = float(np.sqrt(np.mean(np.square(clip.signal), dtype=np.float64)))
        rms_db.setdefault(clip.actor, []).append(20 * np.log10(rms + 1e-9))
    gains = {a: 10 ** ((target_dbfs - float(np.median(v))) / 20.0) for a, v in rms_db.items()}
    out = []
    for clip in clips:
        scaled = clip.signal * np.float32(gains[clip.actor])
        out.append(LabelledClip(clip.name, clip.actor, clip.emotion,
                                np.clip(scaled, -1.0, 1.0).astype(np.float32)))
    return out


def bank_from_source(
    source: str | Path,
    *,
    sr: int = 8000,
    actors: Iterable[int] | None = None,
    emotions: Iterable[str] | None = None,
) -> ClipBank:
    """``"synth"`` for synthetic voices, else a folder of RAVDESS-named clips."""
    if str(source).lower() in {"synth", "synthetic"}:
        return ClipBank.synthetic(actors=actors if actors is not None else range(1, 9),
                                  emotions=tuple(emotions) if emotions else tuple(RAVDESS_CODES),
                                  sr=sr)
    return ClipBank.from_folder(Path(source), actors=actors, emotions=emotions, sr=sr)
