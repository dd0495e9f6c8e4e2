"""Fixture writers: small synthetic corpora with each corpus's real naming, and the CSVs around them.

Audio comes from ``etl.synthetic.speech`` (deterministic), short and at 16 kHz so a fixture writes in well
under a second. Other helpers may import these (e.g. ``write_ravdess_fixture`` for feature or
training tests).
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import soundfile as sf

from etl.corpora.parsers import CREMAD_EMOTIONS, EMODB_EMOTIONS, SAVEE_EMOTIONS, TESS_EMOTIONS
from etl.synthetic.speech import Voice, hash_seed, synthesize, write_ravdess_corpus

# canonical emotion -> the corpus's code, inverted from the parsers (one spelling of each scheme)
CREMAD_CODES = {emotion: code for code, emotion in CREMAD_EMOTIONS.items()}
TESS_CODES = {emotion: code for code, emotion in TESS_EMOTIONS.items()}
SAVEE_CODES = {emotion: code for code, emotion in SAVEE_EMOTIONS.items()}
EMODB_CODES = {emotion: code for code, emotion in EMODB_EMOTIONS.items()}


def write_clip(
    path: Path,
    *,
    emotion: str = "neutral",
    actor: int = 1,
    seed: int | None = None,
    sr: int = 16000,
    duration_s: float = 0.3,
    female: bool | None = None,
) -> Path:
    """One synthetic utterance at ``path``; the format follows the extension (wav/flac/ogg/mp3)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    signal = synthesize(emotion, voice=Voice.for_actor(actor, female=female),
                        seed=hash_seed(path.name, actor) if seed is None else seed,
                        sr=sr, duration_s=duration_s)
    sf.write(str(path), signal, sr)
    return path


def write_ravdess_fixture(
    root: Path,
    *,
    actors: Iterable[int] = range(1, 3),
    emotions: Sequence[str] = ("neutral", "happy", "sad", "angry"),
    duration_s: float = 0.3,
    sr: int = 16000,
    extension: str = ".wav",
) -> list[Path]:
    """RAVDESS layout ``Actor_NN/03-01-EE-II-SS-RR-AA`` (neutral has only normal intensity).

    With the defaults: 2 actors x (1 + 3 x 2 intensities) x 2 statements = 28 files.
    """
    return write_ravdess_corpus(root, actors=list(actors), emotions=tuple(emotions),
                                duration_s=duration_s, sr=sr, extension=extension)


def write_cremad_fixture(
    root: Path,
    *,
    actors: Sequence[int] = (1001, 1002),
    sentences: Sequence[str] = ("DFA", "IEO"),
    emotions: Sequence[str] = ("angry", "happy", "neutral"),
    level: str = "XX",
    duration_s: float = 0.3,
) -> list[Path]:
    """Flat folder of ``ActorID_Sentence_Emotion_Level.wav`` (like CREMA-D's AudioWAV)."""
    return [write_clip(root / f"{a}_{s}_{CREMAD_CODES[e]}_{level}.wav", emotion=e, actor=a,
                       duration_s=duration_s)
            for a in actors for s in sentences for e in emotions]


def write_tess_fixture(root: Path, *, words: Sequence[str] = ("back", "dog"),
                       emotions: Sequence[str] = ("angry", "pleasant_surprise", "sad"),
                       duration_s: float = 0.3) -> list[Path]:
    """``OAF_word_emotion.wav`` / ``YAF_word_emotion.wav`` in per-speaker folders."""
    return [write_clip(root / f"{spk}_{TESS_CODES[e]}" / f"{spk}_{w}_{TESS_CODES[e]}.wav",
                       emotion=e, actor=n, female=True, duration_s=duration_s)
            for n, spk in enumerate(("OAF", "YAF"), start=1) for w in words for e in emotions]


def write_savee_fixture(root: Path, *, prefixed: bool = True,
                        emotions: Sequence[str] = ("angry", "sad", "surprised", "neutral"),
                        numbers: Sequence[int] = (1, 2), duration_s: float = 0.3) -> list[Path]:
    """``DC_a01.wav`` (prefixed) or ``DC/a01.wav`` (speaker folders, as in AudioData/)."""
    paths = []
    for n, spk in enumerate(("DC", "JK"), start=1):
        for e in emotions:
            for k in numbers:
                stem = f"{SAVEE_CODES[e]}{k:02d}"
                path = root / f"{spk}_{stem}.wav" if prefixed else root / spk / f"{stem}.wav"
                paths.append(write_clip(path, emotion=e, actor=n * 2 - 1, duration_s=duration_s))
    return paths


def write_emodb_fixture(root: Path, *, speakers: Sequence[str] = ("03", "08"),
                        emotions: Sequence[str] = ("angry", "boredom", "fearful"),
                        texts: Sequence[str] = ("a01", "b02"), duration_s: float = 0.3) -> list[Path]:
    """``wav/03a01Fa.wav``: speaker, text code, emotion letter, version."""
    return [write_clip(root / "wav" / f"{s}{t}{EMODB_CODES[e]}a.wav", emotion=e, actor=int(s),
                       duration_s=duration_s)
            for s in speakers for t in texts for e in emotions]


def write_bad_files(root: Path, *, names: dict[str, str] | None = None) -> dict[str, Path]:
    """A corrupt audio file, a zero-length one and a text file, each with a corpus-valid name.

    ``names`` maps kind (corrupt, empty, text) -> file name; defaults use RAVDESS names of
    actor 99 so they never collide with ``write_ravdess_fixture`` files.
    """
    names = names or {"corrupt": "03-01-05-01-01-01-99.wav", "empty": "03-01-04-01-01-01-99.wav",
                      "text": "notes.txt"}
    root.mkdir(parents=True, exist_ok=True)
    out = {kind: root / name for kind, name in names.items()}
    # A RIFF header followed by garbage: looks like audio by extension, is not.
    out["corrupt"].write_bytes(b"RIFF\x24\x00\x00\x00WAVEjunk" + bytes(range(256)) * 4)
    out["empty"].write_bytes(b"")
    out["text"].write_text("recording notes, not audio\n")
    return out


def write_cremad_demographics(path: Path, *, actors: Sequence[int] = (1001, 1002, 1003),
                              malformed: bool = True) -> Path:
    """VideoDemographics.csv format; with ``malformed`` three bad rows follow the good ones:
    a non-numeric age, a short row and an unknown sex (lines len(actors)+2 .. +4)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle, quoting=csv.QUOTE_NONNUMERIC)
        writer.writerow(["ActorID", "Age", "Sex", "Race", "Ethnicity"])
        for i, actor in enumerate(actors):
            writer.writerow([actor, 20 + 7 * i, "Male" if i % 2 == 0 else "Female",
                             "Caucasian" if i % 3 else "Asian", "Not Hispanic"])
        if malformed:
            writer.writerow([1090, "forty", "Male", "Caucasian", "Not Hispanic"])
            writer.writerow([1091, 33])
            writer.writerow([1092, 40, "Robot", "Unknown", "Hispanic"])
    return path


def write_cremad_votes(path: Path, clip_names: Sequence[str], *,
                       label_share: float = 0.8, n: int = 10) -> Path:
    """tabulatedVotes.csv format: voice (1xxxxx) and face (2xxxxx) rows per clip.

    Voice raters pick the clip's labelled emotion with ``label_share``; the rest say neutral
    (or sad for neutral clips).
    """
    letters = ["A", "D", "F", "H", "N", "S"]
    header = ["", *letters, "fileName", "numResponses", "agreement", "emoVote", "meanEmoResp"]
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle, quoting=csv.QUOTE_NONNUMERIC)
        writer.writerow(header)
        for mode in (1, 2):
            for k, name in enumerate(clip_names, start=1):
                label = name.split("_")[2][0]
                counts = dict.fromkeys(letters, 0)
                hits = round(label_share * n) if mode == 1 else n
                counts[label] = hits
                counts["N" if label != "N" else "S"] += n - hits
                top = max(counts, key=lambda c: counts[c])
                writer.writerow([str(mode * 100000 + k), *counts.values(), name, n,
                                 counts[top] / n, top, 60.0])
    return path


def write_manifest(root: Path, *, bad_row: bool = True) -> tuple[Path, list[Path]]:
    """A user's own recordings (wav, flac, ogg) and ``manifest.csv`` with extra columns.

    With ``bad_row``, one row names an unknown emotion and one a missing file (data lines 5, 6).
    Returns (manifest path, the audio files that should land).
    """
    audio = [
        write_clip(root / "rec" / "call_0001.wav", emotion="angry", actor=3),
        write_clip(root / "rec" / "call_0002.flac", emotion="sad", actor=4),
        write_clip(root / "rec" / "call_0003.ogg", emotion="happy", actor=3),
    ]
    rows = [
        ["rec/call_0001.wav", "Anger", "agent_7", "M", "41", "billing", "0.9"],
        ["rec/call_0002.flac", "sad", "cust_2", "female", "", "support", "0.6"],
        ["rec/call_0003.ogg", "happy", "agent_7", "M", "41", "billing", ""],
    ]
    if bad_row:
        rows.append(["rec/call_0004.wav", "grumpy", "agent_9", "M", "30", "billing", ""])
        rows.append(["rec/missing.wav", "angry", "agent_9", "M", "30", "billing", ""])
    manifest = root / "manifest.csv"
    with manifest.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "emotion", "speaker", "sex", "age", "queue", "annotator_score"])
        writer.writerows(rows)
    return manifest, audio


def write_tiny_wavs(root: Path, n: int, *, sr: int = 8000, duration_s: float = 0.1) -> list[Path]:
    """``n`` distinct 0.1 s RAVDESS-named WAVs (noise, not speech) for metadata benchmarks.

    Names cycle through actors 01-24, emotions, intensities, statements and repetitions; past
    those combinations the repetition number grows (still valid two-digit codes up to 99).
    """
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        actor, rest = i % 24 + 1, i // 24
        emo, rest = rest % 8 + 1, rest // 8
        stmt, rest = rest % 2 + 1, rest // 2
        inten, rep = rest % 2 + 1, rest // 2 + 1
        if rep > 99:
            raise ValueError("write_tiny_wavs supports at most 24*8*2*2*99 files")
        folder = root / f"Actor_{actor:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"03-01-{emo:02d}-{inten:02d}-{stmt:02d}-{rep:02d}-{actor:02d}.wav"
        sf.write(str(path), (0.01 * rng.standard_normal(int(sr * duration_s))).astype(np.float32),
                 sr, subtype="PCM_16")
        paths.append(path)
    return paths
