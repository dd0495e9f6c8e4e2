"""Recording verdicts: every path goes through ``analytics.add_review`` (migration e4b1c7a9d2f6),
the function reviewers call from SQL, so a verdict is stored the same way from any tool."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import bindparam, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session
from sqlalchemy.types import BigInteger, Text

VERDICTS = ("right", "wrong")


@dataclass(frozen=True, slots=True)
class Verdict:
    """A supervisor's judgement of one call's escalation decision."""

    call_id: int
    verdict: str  # "right" / "wrong": the escalation decision (escalated or not) was ...
    customer_emotion: str | None = None
    note: str | None = None

    def __post_init__(self) -> None:
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict must be right or wrong (the call's escalation decision), "
                             f"not {self.verdict!r}")


_ADD = text("""
    SELECT analytics.add_review(v.call_id, v.verdict, v.emotion, v.note, :by) AS id
    FROM unnest(:ids, :verdicts, :emotions, :notes) WITH ORDINALITY
         AS v(call_id, verdict, emotion, note, n)
    ORDER BY v.n""").bindparams(
    bindparam("ids", type_=ARRAY(BigInteger)), bindparam("verdicts", type_=ARRAY(Text)),
    bindparam("emotions", type_=ARRAY(Text)), bindparam("notes", type_=ARRAY(Text)))


def record_reviews(session: Session, verdicts: Sequence[Verdict], *, reviewed_by: str) -> list[int]:
    """Store ``verdicts`` (one statement); return the new review ids in order.

    Raises
    ------
    ValueError
        A call id that is not a scored call (nothing is stored then).
    """
    if not verdicts:
        return []
    try:
        with session.begin_nested():
            rows = session.execute(_ADD, {
                "ids": [v.call_id for v in verdicts], "verdicts": [v.verdict for v in verdicts],
                "emotions": [v.customer_emotion for v in verdicts],
                "notes": [v.note for v in verdicts], "by": reviewed_by}).scalars().all()
    except DBAPIError as exc:
        if getattr(exc.orig, "pgcode", None) == "22023":
            message = str(exc.orig).strip().splitlines()[0]
            raise ValueError(message.removeprefix("ERROR:").strip()) from None
        raise
    return [int(r) for r in rows]
