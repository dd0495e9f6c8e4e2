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
