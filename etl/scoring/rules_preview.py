"""Which calls of an already-scored batch a set of escalation rules would flag, without rescoring.

Rules read only numbers stored in ``call_summaries`` (every rule metric is one of its columns), so
a preview is one query: each rule is compiled into a boolean SQL expression over those columns
and PostgreSQL returns the calls where any of them holds, with the values the rules read. No
audio is decoded and no segment is read. A NULL metric makes its condition false, as in
:func:`etl.scoring.escalation.evaluate`; the reason text is built by that same code from the returned
values, so a preview and a scoring run with the same rules agree.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from etl.scoring.escalation import METRICS, Condition, EscalationRule, Group, Node, evaluate


@dataclass(frozen=True, slots=True)
class PreviewCall:
    """A scored call at least one rule fires on."""

    call_id: int
    call_key: str
    agent_id: str | None
    queue: str | None
    batch_id: int
    model_version_id: int
    rules: list[str]  # every rule that fires, in rule order
    escalation_rule: str  # the first one: what scoring would store
    reason: str
    stored_rule: str | None  # what the scoring run stored (its own rules)


@dataclass(frozen=True, slots=True)
class RulesPreview:
    batch_date: dt.date
    batch_ids: list[int]
    n_scored: int
    n_stored_escalations: int
    calls: list[PreviewCall]
    # rule name -> call keys it fires on (every rule listed, also those that fire on nothing)
    by_rule: dict[str, list[str]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["batch_date"] = self.batch_date.isoformat()
        return data


def rule_sql(node: Node, params: dict[str, float], *, alias: str = "s") -> str:
    """A boolean SQL expression for ``node`` over ``alias``'s columns; thresholds go to
    ``params``. Metric names are validated on load (:data:`etl.scoring.escalation.METRICS`), so they
    are safe as identifiers; a NULL metric is false (coalesce), as in ``evaluate``."""
    if isinstance(node, Condition):
        if node.metric not in METRICS:  # rules built by hand bypass load-time validation
            raise ValueError(f"unknown metric {node.metric!r}")
        key = f"t{len(params)}"
        params[key] = node.threshold
        return f"coalesce({alias}.{node.metric} {node.op} :{key}, false)"
    assert isinstance(node, Group)
    joiner = " AND " if node.mode == "all" else " OR "
    return "(" + joiner.join(rule_sql(part, params, alias=alias) for part in node.parts) + ")"


def preview_rules(
    session: Session,
    rules: Sequence[EscalationRule],
    *,
    batch_date: dt.date,
    model_version_id: int | None = None,
    source_path: str | None = None,
) -> RulesPreview:
    """The scored calls of the batches on ``batch_date`` that ``rules`` would escalate.

    Parameters
    ----------
    rules
        In priority order (the first that fires is the call's escalation rule).
    model_version_id, source_path
        Only the batches scored with that model version / from that folder (default: all).
    """
    if not rules:
        raise ValueError("no rules to preview")
    params: dict[str, Any] = {"d": batch_date, "m": model_version_id, "p": source_path}
    fired = [rule_sql(rule.condition, params) for rule in rules]
    metrics = sorted(set().union(*(rule.metrics for rule in rules)))
    scope = """FROM call_summaries s
        JOIN calls c ON c.id = s.call_id
        JOIN batches b ON b.id = c.batch_id AND b.model_version_id = s.model_version_id
        WHERE b.batch_date = :d AND c.status = 'scored'
          AND (CAST(:m AS integer) IS NULL OR b.model_version_id = :m)
          AND (CAST(:p AS text) IS NULL OR b.source_path = :p)"""
    totals = session.execute(text(
        f"SELECT array_agg(DISTINCT b.id) AS batch_ids, count(*) AS n, "
        f"count(*) FILTER (WHERE s.escalated) AS n_escalated {scope}"), params).one()
    rows = session.execute(text(
        f"SELECT c.id AS call_id, c.call_key, c.agent_id, c.queue, b.id AS batch_id, "
        f"s.model_version_id, s.escalation_rule AS stored_rule, "
        f"{', '.join(f's.{m}' for m in metrics)} {scope} AND ({' OR '.join(fired)}) "
        f"ORDER BY c.call_key, s.model_version_id"), params).mappings().all()
    calls = []
    for row in rows:
        values = {m: row[m] for m in metrics}
        escalation = evaluate(values, rules)
        assert escalation is not None, "SQL and evaluate() disagree"
        calls.append(PreviewCall(
            call_id=row["call_id"], call_key=row["call_key"], agent_id=row["agent_id"],
            queue=row["queue"], batch_id=row["batch_id"],
            model_version_id=row["model_version_id"],
            rules=[r.name for r in rules if r.fires(values)],
            escalation_rule=escalation.rule, reason=escalation.reason,
            stored_rule=row["stored_rule"]))
    by_rule = {r.name: [c.call_key for c in calls if r.name in c.rules] for r in rules}
    return RulesPreview(batch_date=batch_date, batch_ids=sorted(totals.batch_ids or []),
                        n_scored=int(totals.n), n_stored_escalations=int(totals.n_escalated),
                        calls=calls, by_rule=by_rule)
