"""File-name parsing per corpus, against the real naming schemes (pure: no files, no DB)."""

from __future__ import annotations

from pathlib import Path

import pytest

from etl.corpora.labels import CANONICAL_EMOTIONS
from etl.corpora.parsers import (
    CREMAD_EMOTIONS,
    EMODB_EMOTIONS,
    RAVDESS_EMOTIONS,
    SAVEE_EMOTIONS,
    TESS_EMOTIONS,
    ClipNameError,
    canonical_emotion,
    check_corpus,
    parse_clip_name,
    sex_from_text,
)


def test_every_corpus_maps_into_the_canonical_vocabulary() -> None:
    for table in (RAVDESS_EMOTIONS, CREMAD_EMOTIONS, TESS_EMOTIONS, SAVEE_EMOTIONS,
                  EMODB_EMOTIONS):
        assert set(table.values()) <= set(CANONICAL_EMOTIONS)


# ---- RAVDESS -------------------------------------------------------------------------------

def test_ravdess_full_name() -> None:
    clip = parse_clip_name("ravdess", Path("Actor_12/03-01-05-02-01-01-12.wav"))
    assert (clip.actor_code, clip.emotion, clip.emotion_code) == ("12", "angry", "05")
    assert (clip.intensity, clip.statement, clip.repetition) == ("strong", "01", 1)
    assert clip.sex == "female"  # even actor
    assert clip.extra["statement_text"] == "Kids are talking by the door"


@pytest.mark.parametrize(("code", "emotion"), sorted(RAVDESS_EMOTIONS.items()))
def test_ravdess_emotion_codes(code: str, emotion: str) -> None:
    clip = parse_clip_name("ravdess", Path(f"03-01-{code}-01-02-02-07.flac"))
    assert clip.emotion == emotion and clip.sex == "male" and clip.statement == "02"


@pytest.mark.parametrize("stem", ["01-01-05-01-01-01-01", "02-01-05-01-01-01-01",
                                  "03-02-05-01-01-01-01"])
def test_ravdess_video_or_song_is_not_speech_audio(stem: str) -> None:
    with pytest.raises(ClipNameError, match="not an audio-only speech clip"):
        parse_clip_name("ravdess", Path(f"{stem}.wav"))


@pytest.mark.parametrize("stem", ["03-01-09-01-01-01-01", "03-01-05-03-01-01-01",
                                  "03-01-05-01-01-01", "Actor_01", "03-01-05-01-01-01-00"])
def test_ravdess_bad_names(stem: str) -> None:
    with pytest.raises(ClipNameError):
        parse_clip_name("ravdess", Path(f"{stem}.wav"))


# ---- CREMA-D -------------------------------------------------------------------------------

def test_cremad_name() -> None:
    clip = parse_clip_name("crema-d", Path("AudioWAV/1001_DFA_ANG_XX.wav"))
    assert (clip.actor_code, clip.emotion, clip.emotion_code) == ("1001", "angry", "ANG")
    assert (clip.intensity, clip.statement, clip.sex) == ("unspecified", "DFA", None)
    assert clip.extra["statement_text"] == "Don't forget a jacket"


@pytest.mark.parametrize(("level", "intensity"),
                         [("LO", "low"), ("MD", "medium"), ("HI", "high"), ("XX", "unspecified")])
def test_cremad_levels(level: str, intensity: str) -> None:
    assert parse_clip_name("crema-d", Path(f"1091_IEO_SAD_{level}.mp3")).intensity == intensity


@pytest.mark.parametrize("stem", ["1001_DFA_SUR_XX", "1001_DFA_ANG_ZZ", "1001_ABC_ANG_XX",
                                  "101_DFA_ANG_XX", "1001-DFA-ANG-XX"])
def test_cremad_bad_names(stem: str) -> None:
    with pytest.raises(ClipNameError):
        parse_clip_name("crema-d", Path(f"{stem}.wav"))


# ---- TESS ----------------------------------------------------------------------------------

def test_tess_names() -> None:
    clip = parse_clip_name("tess", Path("OAF_angry/OAF_back_angry.wav"))
    assert (clip.actor_code, clip.statement, clip.emotion, clip.sex, clip.age) == (
        "OAF", "back", "angry", "female", 64)
    ps = parse_clip_name("tess", Path("YAF_pleasant_surprised/YAF_dog_ps.wav"))
    assert (ps.actor_code, ps.emotion, ps.emotion_code) == ("YAF", "pleasant_surprise", "ps")
    assert parse_clip_name("tess", Path("OAF_Fear/OAF_bite_Fear.wav")).emotion == "fearful"
    # The public copy has a few "OA_" names for the same older speaker.
    assert parse_clip_name("tess", Path("OA_bite_neutral.wav")).actor_code == "OAF"


@pytest.mark.parametrize("stem", ["OAF_back", "MAF_back_angry", "OAF_back_bored",
                                  "OAF_back_angry_2"])
def test_tess_bad_names(stem: str) -> None:
    with pytest.raises(ClipNameError):
        parse_clip_name("tess", Path(f"{stem}.wav"))


# ---- SAVEE ---------------------------------------------------------------------------------

@pytest.mark.parametrize(("name", "actor", "emotion", "code", "number"), [
    ("DC_a01.wav", "DC", "angry", "a", "01"),
    ("JK_sa03.wav", "JK", "sad", "sa", "03"),
    ("KL_su10.wav", "KL", "surprised", "su", "10"),
    ("JE_n30.wav", "JE", "neutral", "n", "30"),
    ("AudioData/DC/f05.wav", "DC", "fearful", "f", "05"),  # prefix absent: speaker folder
])
def test_savee_names(name: str, actor: str, emotion: str, code: str, number: str) -> None:
    clip = parse_clip_name("savee", Path(name))
    assert (clip.actor_code, clip.emotion, clip.emotion_code, clip.statement, clip.sex) == (
        actor, emotion, code, number, "male")


@pytest.mark.parametrize("name", ["audio/a01.wav", "XX_a01.wav", "DC_x01.wav", "DC_a1.wav"])
def test_savee_bad_names(name: str) -> None:
    with pytest.raises(ClipNameError):
        parse_clip_name("savee", Path(name))


# ---- EmoDB ---------------------------------------------------------------------------------

@pytest.mark.parametrize(("letter", "emotion"), sorted(EMODB_EMOTIONS.items()))
def test_emodb_emotion_letters(letter: str, emotion: str) -> None:
    clip = parse_clip_name("emodb", Path(f"wav/03a01{letter}a.wav"))
    assert clip.emotion == emotion and clip.emotion_code == letter


@pytest.mark.parametrize(("speaker", "sex", "age"), [
    ("03", "male", 31), ("08", "female", 34), ("09", "female", 21), ("10", "male", 32),
    ("11", "male", 26), ("12", "male", 30), ("13", "female", 32), ("14", "female", 35),
    ("15", "male", 25), ("16", "female", 31)])
def test_emodb_speakers_documented(speaker: str, sex: str, age: int) -> None:
    clip = parse_clip_name("emodb", Path(f"{speaker}b10Tc.wav"))
    assert (clip.actor_code, clip.sex, clip.age) == (speaker, sex, age)
    assert (clip.statement, clip.repetition, clip.emotion) == ("b10", 3, "sad")


@pytest.mark.parametrize("stem", ["04a01Fa", "03a01Xa", "03c01Fa", "03a01F", "3a01Fa"])
def test_emodb_bad_names(stem: str) -> None:
    with pytest.raises(ClipNameError):
        parse_clip_name("emodb", Path(f"{stem}.wav"))


# ---- shared --------------------------------------------------------------------------------

def test_unknown_corpus_and_manifest_are_value_errors() -> None:
    with pytest.raises(ValueError, match="unknown corpus 'iemocap'"):
        parse_clip_name("iemocap", Path("x.wav"))
    with pytest.raises(ValueError, match="labelled by the CSV"):
        parse_clip_name("manifest", Path("x.wav"))
    assert check_corpus("CREMAD") == "crema-d"


def test_emotion_aliases_and_sex() -> None:
    assert canonical_emotion(" Anger ") == "angry"
    assert canonical_emotion("ps") == "pleasant_surprise"
    with pytest.raises(ValueError, match="unknown emotion 'grumpy'"):
        canonical_emotion("grumpy")
    assert (sex_from_text("F"), sex_from_text("Male"), sex_from_text(" ")) == (
        "female", "male", None)
    with pytest.raises(ValueError):
        sex_from_text("robot")


@pytest.mark.parametrize("path", ["Actor_13/03-01-05-02-01-01-99.wav",
                                  "actor_13/03-01-05-02-01-01-12.flac"])
def test_ravdess_name_must_agree_with_its_actor_folder(path: str) -> None:
    with pytest.raises(ClipNameError, match="folder"):
        parse_clip_name("ravdess", Path(path))
    # the same name in its own folder, or in a folder that is not Actor_NN, is fine
    stem = Path(path).stem
    actor = stem[-2:]
    assert parse_clip_name("ravdess", Path(f"Actor_{actor}/{stem}.wav")).actor_code == actor
    assert parse_clip_name("ravdess", Path(f"incoming/{stem}.wav")).actor_code == actor
