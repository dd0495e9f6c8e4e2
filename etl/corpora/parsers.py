"""Labels from file names: pure parsers, one per corpus, onto one canonical emotion vocabulary.

Every corpus encodes its labels in the file name (and sometimes the folder). The parsers here
turn a path into a :class:`ParsedClip` without touching the file, so they are cheap, testable
without audio, and the single place where a corpus's naming scheme is written down.

Naming schemes (stem, extension ignored)
----------------------------------------
ravdess  ``MM-VC-EE-II-SS-RR-AA``   modality 03 (audio-only), vocal channel 01 (speech), emotion,
                                     intensity, statement, repetition, actor (odd male, even female)
crema-d  ``AAAA_SSS_EEE_LL``         actor, sentence, emotion (ANG DIS FEA HAP NEU SAD),
                                     level (LO MD HI XX)
tess     ``OAF_back_angry``          speaker (OAF older / YAF younger, both female), word, emotion
savee    ``DC_a01`` or ``DC/a01``    speaker (DC JE JK KL, all male), emotion code + number
emodb    ``03a01Fa``                 speaker, text code, emotion letter (German), version letter
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from etl.corpora.labels import CANONICAL_EMOTIONS

FOLDER_CORPORA: Final[tuple[str, ...]] = ("ravdess", "crema-d", "tess", "savee", "emodb")
MANIFEST: Final[str] = "manifest"
CORPORA: Final[tuple[str, ...]] = (*FOLDER_CORPORA, MANIFEST)


class ClipNameError(ValueError):
    """A file name that does not follow the corpus's naming scheme (or is not a usable clip)."""


@dataclass(frozen=True, slots=True)
class ParsedClip:
    """Labels and speaker implied by one clip's name.

    ``emotion`` is canonical (``etl.corpora.labels.CANONICAL_EMOTIONS``); ``emotion_code`` is the
    corpus's own spelling. ``sex``/``age`` are set only when the corpus documents them for the
    speaker (``None`` otherwise, e.g. CREMA-D, whose demographics come from a CSV).
    """

    actor_code: str
    emotion: str
    emotion_code: str
    intensity: str | None = None
    statement: str | None = None
    repetition: int | None = None
    sex: str | None = None
    age: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------------------------
# Emotion vocabulary
# --------------------------------------------------------------------------------------------

# Spellings seen in corpora and user manifests -> canonical emotion.
EMOTION_ALIASES: Final[dict[str, str]] = {
    **{e: e for e in CANONICAL_EMOTIONS},
    "anger": "angry", "ang": "angry", "mad": "angry",
    "fear": "fearful", "afraid": "fearful", "fea": "fearful", "scared": "fearful",
    "disgusted": "disgust", "dis": "disgust",
    "happiness": "happy", "joy": "happy", "hap": "happy",
    "sadness": "sad",
    "neu": "neutral",
    "surprise": "surprised",
    "ps": "pleasant_surprise", "pleasant surprise": "pleasant_surprise",
    "pleasant-surprise": "pleasant_surprise", "pleasant_surprised": "pleasant_surprise",
    "bored": "boredom", "boring": "boredom",
}


def canonical_emotion(label: str) -> str:
    """Canonical emotion for a free-text label (case/space-insensitive); ValueError if unknown."""
    key = label.strip().lower()
    try:
        return EMOTION_ALIASES[key]
    except KeyError:
        raise ValueError(
            f"unknown emotion {label!r}; use one of {', '.join(CANONICAL_EMOTIONS)}"
        ) from None


# --------------------------------------------------------------------------------------------
# RAVDESS
# --------------------------------------------------------------------------------------------

RAVDESS_EMOTIONS: Final[dict[str, str]] = {
    "01": "neutral", "02": "calm", "03": "happy", "04": "sad",
    "05": "angry", "06": "fearful", "07": "disgust", "08": "surprised",
}
RAVDESS_INTENSITY: Final[dict[str, str]] = {"01": "normal", "02": "strong"}
RAVDESS_STATEMENTS: Final[dict[str, str]] = {
    "01": "Kids are talking by the door", "02": "Dogs are sitting by the door",
}
_RAVDESS_RE = re.compile(r"^(\d{2})-(\d{2})-(\d{2})-(\d{2})-(\d{2})-(\d{2})-(\d{2})$")
_RAVDESS_ACTOR_DIR = re.compile(r"^Actor_(\d+)$", re.IGNORECASE)


def parse_ravdess(path: Path) -> ParsedClip:
    match = _RAVDESS_RE.match(path.stem)
    if not match:
        raise ClipNameError("name is not RAVDESS MM-VC-EE-II-SS-RR-AA (e.g. 03-01-05-02-01-01-12)")
    modality, channel, emo, inten, stmt, rep, actor = match.groups()
    # 01/02 are video files and 02 is song: this product models speech audio only.
    if modality != "03" or channel != "01":
        raise ClipNameError(
            f"not an audio-only speech clip (modality {modality}, vocal channel {channel})")
    if emo not in RAVDESS_EMOTIONS:
        raise ClipNameError(f"unknown RAVDESS emotion code {emo}")
    if inten not in RAVDESS_INTENSITY:
        raise ClipNameError(f"unknown RAVDESS intensity code {inten}")
    if stmt not in RAVDESS_STATEMENTS:
        raise ClipNameError(f"unknown RAVDESS statement code {stmt}")
    actor_n = int(actor)
    if actor_n < 1:
        raise ClipNameError("RAVDESS actor number must be 01-24")
    # The corpus ships one Actor_NN folder per actor: a name that disagrees with its folder is a
    # renamed or misplaced file, and trusting either would attribute it to the wrong speaker.
    folder = _RAVDESS_ACTOR_DIR.match(path.parent.name)
    if folder and int(folder.group(1)) != actor_n:
        raise ClipNameError(f"name says actor {actor} but the file is in folder {path.parent.name}")
    return ParsedClip(
        actor_code=actor,
        emotion=RAVDESS_EMOTIONS[emo],
        emotion_code=emo,
        intensity=RAVDESS_INTENSITY[inten],
        statement=stmt,
        repetition=int(rep),
        sex="male" if actor_n % 2 else "female",
        extra={"statement_text": RAVDESS_STATEMENTS[stmt]},
    )


# --------------------------------------------------------------------------------------------
# CREMA-D
# --------------------------------------------------------------------------------------------

CREMAD_EMOTIONS: Final[dict[str, str]] = {
    "ANG": "angry", "DIS": "disgust", "FEA": "fearful",
    "HAP": "happy", "NEU": "neutral", "SAD": "sad",
}
CREMAD_LEVELS: Final[dict[str, str]] = {
    "LO": "low", "MD": "medium", "HI": "high", "XX": "unspecified",
}
CREMAD_SENTENCES: Final[dict[str, str]] = {
    "IEO": "It's eleven o'clock", "TIE": "That is exactly what happened",
    "IOM": "I'm on my way to the meeting", "IWW": "I wonder what this is about",
    "TAI": "The airplane is almost full", "MTI": "Maybe tomorrow it will be cold",
    "IWL": "I would like a new alarm clock", "ITH": "I think I have a doctor's appointment",
    "DFA": "Don't forget a jacket", "ITS": "I think I've seen this before",
    "TSI": "The surface is slick", "WSI": "We'll stop in a couple of minutes",
}
_CREMAD_RE = re.compile(r"^(\d{4})_([A-Z]{3})_([A-Z]{3})_([A-Z]{2})$")


def parse_cremad(path: Path) -> ParsedClip:
    return parse_cremad_name(path.stem)


def parse_cremad_name(stem: str) -> ParsedClip:
    """Parse ``1001_DFA_ANG_XX`` (also used for the clip names in tabulatedVotes.csv)."""
    match = _CREMAD_RE.match(stem)
    if not match:
        raise ClipNameError("name is not CREMA-D ActorID_Sentence_Emotion_Level "
                            "(e.g. 1001_DFA_ANG_XX)")
    actor, sentence, emo, level = match.groups()
    if emo not in CREMAD_EMOTIONS:
        raise ClipNameError(f"unknown CREMA-D emotion {emo} (expected ANG DIS FEA HAP NEU SAD)")
    if level not in CREMAD_LEVELS:
        raise ClipNameError(f"unknown CREMA-D level {level} (expected LO MD HI XX)")
    if sentence not in CREMAD_SENTENCES:
        raise ClipNameError(f"unknown CREMA-D sentence code {sentence}")
    return ParsedClip(
        actor_code=actor,
        emotion=CREMAD_EMOTIONS[emo],
        emotion_code=emo,
        intensity=CREMAD_LEVELS[level],
        statement=sentence,
        extra={"statement_text": CREMAD_SENTENCES[sentence]},
    )


# --------------------------------------------------------------------------------------------
# TESS
# --------------------------------------------------------------------------------------------

TESS_EMOTIONS: Final[dict[str, str]] = {
    "angry": "angry", "disgust": "disgust", "fear": "fearful", "happy": "happy",
    "neutral": "neutral", "ps": "pleasant_surprise", "sad": "sad",
}
# Both TESS speakers are women (aged 26 and 64 per the corpus documentation). The public copy
# has a few files named "OA_..." instead of "OAF_...": same speaker.
TESS_SPEAKERS: Final[dict[str, tuple[str, int]]] = {"OAF": ("female", 64), "YAF": ("female", 26)}
_TESS_SPEAKER_ALIASES: Final[dict[str, str]] = {"OA": "OAF", "YA": "YAF"}


def parse_tess(path: Path) -> ParsedClip:
    parts = path.stem.split("_")
    if len(parts) != 3 or not all(parts):
        raise ClipNameError("name is not TESS Speaker_word_emotion (e.g. OAF_back_angry)")
    speaker, word, emo = parts[0].upper(), parts[1].lower(), parts[2].lower()
    speaker = _TESS_SPEAKER_ALIASES.get(speaker, speaker)
    if speaker not in TESS_SPEAKERS:
        raise ClipNameError(f"unknown TESS speaker {parts[0]} (expected OAF or YAF)")
    if emo not in TESS_EMOTIONS:
        raise ClipNameError(
            f"unknown TESS emotion {parts[2]} (expected {', '.join(TESS_EMOTIONS)})")
    sex, age = TESS_SPEAKERS[speaker]
    return ParsedClip(actor_code=speaker, emotion=TESS_EMOTIONS[emo], emotion_code=emo,
                      statement=word, sex=sex, age=age)


# --------------------------------------------------------------------------------------------
# SAVEE
# --------------------------------------------------------------------------------------------

SAVEE_EMOTIONS: Final[dict[str, str]] = {
    "a": "angry", "d": "disgust", "f": "fearful", "h": "happy",
    "n": "neutral", "sa": "sad", "su": "surprised",
}
SAVEE_SPEAKERS: Final[frozenset[str]] = frozenset({"DC", "JE", "JK", "KL"})  # all male
_SAVEE_RE = re.compile(r"^(?:([A-Za-z]{2})_)?(sa|su|a|d|f|h|n)(\d{2})$")


def parse_savee(path: Path) -> ParsedClip:
    match = _SAVEE_RE.match(path.stem)
    if not match:
        raise ClipNameError("name is not SAVEE Speaker_EmotionNN (e.g. DC_a01, JK_sa03) "
                            "or EmotionNN inside a speaker folder (DC/a01)")
    speaker, emo, number = match.groups()
    # The original release keeps each speaker's files in a folder named after them.
    speaker = (speaker or path.parent.name).upper()
    if speaker not in SAVEE_SPEAKERS:
        raise ClipNameError(
            f"unknown SAVEE speaker {speaker!r} (expected DC, JE, JK or KL in the name or folder)")
    return ParsedClip(actor_code=speaker, emotion=SAVEE_EMOTIONS[emo], emotion_code=emo,
                      statement=number, sex="male", extra={"savee_code": f"{emo}{number}"})


# --------------------------------------------------------------------------------------------
# EmoDB (Berlin Database of Emotional Speech)
# --------------------------------------------------------------------------------------------

EMODB_EMOTIONS: Final[dict[str, str]] = {
    "W": "angry",  # Ärger (Wut)
    "L": "boredom",  # Langeweile
    "E": "disgust",  # Ekel
    "A": "fearful",  # Angst
    "F": "happy",  # Freude
    "T": "sad",  # Trauer
    "N": "neutral",
}
# Speaker -> (sex, age) from the EmoDB documentation.
EMODB_SPEAKERS: Final[dict[str, tuple[str, int]]] = {
    "03": ("male", 31), "08": ("female", 34), "09": ("female", 21), "10": ("male", 32),
    "11": ("male", 26), "12": ("male", 30), "13": ("female", 32), "14": ("female", 35),
    "15": ("male", 25), "16": ("female", 31),
}
_EMODB_RE = re.compile(r"^(\d{2})([ab]\d{2})([WLEAFTN])([a-z])$")


def parse_emodb(path: Path) -> ParsedClip:
    match = _EMODB_RE.match(path.stem)
    if not match:
        raise ClipNameError("name is not EmoDB SSTTTEV (e.g. 03a01Fa: speaker 03, text a01, "
                            "emotion F, version a)")
    speaker, text_code, emo, version = match.groups()
    if speaker not in EMODB_SPEAKERS:
        raise ClipNameError(f"unknown EmoDB speaker {speaker} (expected one of "
                            f"{', '.join(EMODB_SPEAKERS)})")
    sex, age = EMODB_SPEAKERS[speaker]
    return ParsedClip(actor_code=speaker, emotion=EMODB_EMOTIONS[emo], emotion_code=emo,
                      statement=text_code, repetition=ord(version) - ord("a") + 1,
                      sex=sex, age=age, extra={"version": version})


# --------------------------------------------------------------------------------------------

_PARSERS = {
    "ravdess": parse_ravdess,
    "crema-d": parse_cremad,
    "tess": parse_tess,
    "savee": parse_savee,
    "emodb": parse_emodb,
}


def check_corpus(corpus: str) -> str:
    """Normalised corpus name; ValueError naming the choices if unknown."""
    name = corpus.strip().lower()
    name = {"cremad": "crema-d", "crema_d": "crema-d", "berlin": "emodb", "emo-db": "emodb"}.get(
        name, name)
    if name not in CORPORA:
        raise ValueError(f"unknown corpus {corpus!r}; choose one of {', '.join(CORPORA)}")
    return name


def parse_clip_name(corpus: str, path: Path) -> ParsedClip:
    """Labels implied by ``path``'s name (and parent folder for SAVEE) under ``corpus``'s scheme.

    Pure: the file is not opened. Raises :class:`ClipNameError` for names outside the scheme
    and ``ValueError`` for an unknown corpus (``manifest`` has no naming scheme).
    """
    name = check_corpus(corpus)
    if name == MANIFEST:
        raise ValueError("manifest clips are labelled by the CSV, not by their file names")
    return _PARSERS[name](Path(path))


def sex_from_text(value: str) -> str | None:
    """'M', 'male', 'Man' -> 'male'; 'F', 'female', 'Woman' -> 'female'; blank -> None."""
    key = value.strip().lower()
    if not key:
        return None
    if key in {"m", "male", "man"}:
        return "male"
    if key in {"f", "female", "woman"}:
        return "female"
    raise ValueError(f"unrecognised sex {value!r} (use male/female, M/F, or leave blank)")
