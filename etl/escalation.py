"""Escalation rules: named thresholds on call-summary numbers; the first rule that fires wins.

Default rules (in priority order)::

    customer_negative_share   negative_share_customer   >= 0.5
    customer_negative_streak  longest_negative_streak_s >= 20 (seconds)
    customer_worsening        customer_trend            >= 0.3
    overtalk                  overtalk_share            >= 0.2

Configure them with a JSON or TOML file (``SER_ESCALATION_RULES=/path/rules.toml``) or inline
JSON in that variable (``SER_ESCALATION_RULES='[{"name": ..., "metric": ..., "op": ">=",
"threshold": ...}]'``). A TOML file holds ``[[rules]]`` tables; a JSON file holds a list or
``{"rules": [...]}``. A rule whose metric is None for a call (e.g. a mono call with no customer
speech) does not fire.

A model version trained with calibration stores an *operating point* (rules and a confidence
floor chosen on its training speakers, :mod:`etl.calibration`); scoring uses it when no rules are
configured (:func:`resolve_operating_point`). Rules given by the user always win; models without
an operating point use the built-in defaults and abstain nothing.
"""

from __future__ import annotations

import json
import operator
import os
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path

from etl.summaries import SummaryStats

ENV_VAR = "SER_ESCALATION_RULES"
_OPS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge, ">": operator.gt, "<=": operator.le, "<": operator.lt}
METRICS = frozenset(f.name for f in fields(SummaryStats) if f.name != "emotion_mix")


@dataclass(frozen=True, slots=True)
class EscalationRule:
    """``metric op threshold`` on a :class:`~etl.summaries.SummaryStats` field."""

    name: str
    metric: str
    threshold: float
    op: str = ">="
    description: str = ""
    # marks the built-in defaults (survives pickling to worker processes, unlike identity), so
    # "nothing configured" can give way to a model's operating point; not part of equality
    builtin: bool = field(default=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.metric not in METRICS:
            raise ValueError(f"escalation rule {self.name!r}: unknown metric {self.metric!r}; "
                             f"choose one of {', '.join(sorted(METRICS))}")
        if self.op not in _OPS:
            raise ValueError(f"escalation rule {self.name!r}: op must be one of {', '.join(_OPS)}")

    def fires(self, summary: SummaryStats) -> bool:
        value = getattr(summary, self.metric)
        return value is not None and _OPS[self.op](float(value), self.threshold)

    def reason(self, summary: SummaryStats) -> str:
        value = getattr(summary, self.metric)
        return f"{self.metric} = {value:.3g} {self.op} {self.threshold:g}" + (
            f" ({self.description})" if self.description else "")


DEFAULT_RULES: tuple[EscalationRule, ...] = (
    EscalationRule("customer_negative_share", "negative_share_customer", 0.5,
                   description="customer negative for half of their speech", builtin=True),
    EscalationRule("customer_negative_streak", "longest_negative_streak_s", 20.0,
                   description="customer negative for 20 s in a row", builtin=True),
    EscalationRule("customer_worsening", "customer_trend", 0.3,
                   description="customer much more negative at the end than at the start", builtin=True),
    EscalationRule("overtalk", "overtalk_share", 0.2,
                   description="both talking at once for a fifth of the call", builtin=True),
)


@dataclass(frozen=True, slots=True)
class Escalation:
    rule: str
    reason: str


def evaluate(summary: SummaryStats,
             rules: Sequence[EscalationRule] = DEFAULT_RULES) -> Escalation | None:
    """The first rule (in order) that fires, with a reason naming every rule that fired."""
    fired = [rule for rule in rules if rule.fires(summary)]
    if not fired:
        return None
    reason = "; ".join(rule.reason(summary) for rule in fired)
    return Escalation(fired[0].name, reason)


def rules_from_data(data: object) -> list[EscalationRule]:
    """Rules from parsed JSON/TOML: a list of tables or ``{"rules": [...]}``."""
    if isinstance(data, Mapping):
        data = data.get("rules")
    if not isinstance(data, list) or not all(isinstance(r, Mapping) for r in data):
        raise ValueError("escalation rules must be a list of {name, metric, threshold, op} "
                         "tables (or {\"rules\": [...]})")
    allowed = {f.name for f in fields(EscalationRule)}
    rules = []
    for entry in data:
        unknown = set(entry) - allowed
        if unknown:
            raise ValueError(f"escalation rule has unknown keys {sorted(unknown)}; "
                             f"allowed: {sorted(allowed)}")
        try:
            rules.append(EscalationRule(name=str(entry["name"]), metric=str(entry["metric"]),
                                        threshold=float(entry["threshold"]),
                                        op=str(entry.get("op", ">=")),
                                        description=str(entry.get("description", ""))))
        except KeyError as exc:
            raise ValueError(f"escalation rule {dict(entry)} is missing {exc}") from None
    return rules


def load_rules(source: str | Path | None = None) -> list[EscalationRule]:
    """Rules from ``source`` (a .json/.toml path or inline JSON), else ``$SER_ESCALATION_RULES``,
    else :data:`DEFAULT_RULES`."""
    source = source if source is not None else os.environ.get(ENV_VAR)
    if source is None or str(source).strip() == "":
        return list(DEFAULT_RULES)
    text = str(source).strip()
    if text.startswith(("[", "{")):
        return rules_from_data(json.loads(text))
    path = Path(text).expanduser()
    if not path.is_file():
        raise ValueError(f"escalation rules file {path} does not exist")
    if path.suffix.lower() == ".toml":
        return rules_from_data(tomllib.loads(path.read_text()))
    return rules_from_data(json.loads(path.read_text()))


def rules_as_data(rules: Sequence[EscalationRule]) -> list[dict[str, object]]:
    """JSON-ready form (stored with each batch so a result says which rules made it)."""
    return [{"name": r.name, "metric": r.metric, "op": r.op, "threshold": r.threshold}
            for r in rules]


@dataclass(frozen=True, slots=True)
class OperatingPoint:
    """The rules and confidence floor a batch is scored with, and where they came from."""

    rules: tuple[EscalationRule, ...]
    confidence_floor: float
    source: str  # "configured", "model", "defaults"


def is_builtin_default(rules: Sequence[EscalationRule] | None) -> bool:
    """True for None or the built-in rules (what :func:`load_rules` returns when nothing is
    configured); a user's file with the same numbers is configured, not this."""
    return rules is None or (len(rules) == len(DEFAULT_RULES)
                             and all(r.builtin for r in rules) and tuple(rules) == DEFAULT_RULES)


def resolve_operating_point(
    configured: Sequence[EscalationRule] | None,
    calibration: Mapping[str, object] | None,
    *,
    confidence_floor: float | None = None,
) -> OperatingPoint:
    """Rules and floor for scoring with a model whose calibration record is ``calibration``.

    Parameters
    ----------
    configured
        Rules from ``--rules`` / ``$SER_ESCALATION_RULES``; None (or the built-in defaults that
        :func:`load_rules` returns when nothing is set) means "not configured".
    calibration
        ``model_versions.params["calibration"]`` (None for models trained before it).
    confidence_floor
        Explicit floor (overrides the model's); None = the model's, or 0 (abstain nothing).
    """
    point = (calibration or {}).get("operating_point")
    stored = point if isinstance(point, Mapping) else None
    model_floor = float(stored.get("confidence_floor") or 0.0) if stored else 0.0  # type: ignore[arg-type]
    floor = float(confidence_floor) if confidence_floor is not None else model_floor
    if not is_builtin_default(configured):
        assert configured is not None
        return OperatingPoint(tuple(configured), floor, "configured")
    if stored and stored.get("rules"):
        return OperatingPoint(tuple(rules_from_data(list(stored["rules"]))), floor,  # type: ignore[call-overload]
                              "model")
    return OperatingPoint(DEFAULT_RULES, floor, "defaults")
