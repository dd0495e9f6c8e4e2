from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session

from etl.corpora.labels import LABEL_SCHEMES, NEGATIVE_CLASSES, map_emotion, scheme_classes


def test_schemes_in_database_match_module(db_session: Session) -> None:
    rows = db_session.execute(
        text("SELECT scheme, emotion, class_label, is_negative FROM label_scheme_classes")).all()
    stored = {(r.scheme, r.emotion): (r.class_label, r.is_negative) for r in rows}
    expected = {(s, e): (c, c in NEGATIVE_CLASSES)
                for s, (_, m) in LABEL_SCHEMES.items() for e, c in m.items()}
    assert stored == expected


def test_posneg_excludes_other_emotions() -> None:
    assert map_emotion("posneg", "angry") == "negative"
    assert map_emotion("posneg", "sad") is None
    assert scheme_classes("callcentre4") == ["angry", "calm", "happy", "sad"]


def test_unknown_scheme_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="unknown label scheme"):
        scheme_classes("emotion99")


# --------------------------------------------------------------------------------------------
# One home per domain rule: these pin the rule and that every user reads it from that home.
# --------------------------------------------------------------------------------------------


def test_negative_emotions_are_the_four_unpleasant_ones() -> None:
    from etl.corpora.labels import CANONICAL_EMOTIONS, NEGATIVE_EMOTIONS, is_negative_class

    assert NEGATIVE_EMOTIONS == {"sad", "angry", "fearful", "disgust"}
    assert NEGATIVE_EMOTIONS <= set(CANONICAL_EMOTIONS)
    # posneg's "negative" class is negative too; no other class label is
    assert NEGATIVE_CLASSES == NEGATIVE_EMOTIONS | {"negative"}
    labels = {c for _, mapping in LABEL_SCHEMES.values() for c in mapping.values()}
    assert {c for c in labels if is_negative_class(c)} == {"sad", "angry", "fearful", "disgust",
                                                           "negative"}
    assert not any(is_negative_class(c) for c in ("calm", "neutral", "happy", "positive",
                                                   "surprised", "boredom"))


def test_generated_upset_customers_draw_exactly_the_negative_emotions() -> None:
    from etl.corpora.labels import NEGATIVE_EMOTIONS
    from etl.synthetic import calls

    assert set(calls._NEGATIVE) == NEGATIVE_EMOTIONS and len(calls._NEGATIVE) == 4
    assert calls.SCENARIOS["upset"] == (calls._NEGATIVE, calls._NEGATIVE)


def test_synthetic_history_reads_the_label_rules() -> None:
    from etl.synthetic import history

    assert history.CALLCENTRE_CLASSES == tuple(scheme_classes("callcentre4"))
    assert not hasattr(history, "NEGATIVE")


@pytest.mark.parametrize(("age", "band"), [
    (None, None), (float("nan"), None), (0, "<18"), (17, "<18"), (17.9, "<18"), (18, "18-29"),
    (29, "18-29"), (30, "30-44"), (44, "30-44"), (45, "45-59"), (59, "45-59"), (60, "60+"),
    (99, "60+")])
def test_age_bands(age: float | None, band: str | None) -> None:
    from etl.corpora.demographics import AGE_BAND_LABELS, age_band

    assert age_band(age) == band
    assert AGE_BAND_LABELS == ("<18", "18-29", "30-44", "45-59", "60+")


def test_training_and_history_use_the_one_age_band() -> None:
    from etl.corpora import demographics
    from etl.synthetic import history
    from etl.training import dataset

    assert dataset.age_band is demographics.age_band
    assert history.age_band is demographics.age_band


@pytest.mark.parametrize("corpus", ["RAVDESS", "CREMAD", "TESS", "SAVEE", "EMODB"])
def test_synthetic_corpora_name_clips_with_the_parsers_codes(corpus: str) -> None:
    """The writers of synthetic corpora invert the parsers' code tables (one spelling each)."""
    from etl.corpora import parsers
    from etl.synthetic import corpora, demo, speech

    table = getattr(parsers, f"{corpus}_EMOTIONS")
    codes = speech.RAVDESS_CODES if corpus == "RAVDESS" else getattr(corpora, f"{corpus}_CODES")
    assert {code: emotion for emotion, code in codes.items()} == table
    assert demo.CREMAD_CODES == corpora.CREMAD_CODES
