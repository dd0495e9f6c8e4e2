"""Escalation rules: named conditions on call-summary numbers; the first rule that fires wins.

Default rules (in priority order)::

    customer_negative_share   negative_share_customer   >= 0.5
    customer_negative_streak  longest_negative_streak_s >= 20 (seconds)
    customer_worsening        customer_trend            >= 0.3
    overtalk                  overtalk_share            >= 0.2

A rule is either *flat*, one ``metric op threshold``, or *compound*: ``all = [...]`` (every
condition holds) or ``any = [...]`` (at least one holds) of conditions, each itself a
``{metric, op, threshold}`` or a nested ``all``/``any``. Metrics are the numeric fields of
:class:`~etl.scoring.summaries.SummaryStats` and of :class:`~etl.scoring.call_metrics.CallMetrics` (the
conversation metrics, per-quarter shares included): :data:`METRICS`. A condition whose metric is
None for a call (e.g. a mono call with no customer speech, or a call scored before the
conversation metrics existed) does not hold. docs/rules.md has the file formats and examples.

Configure them with a JSON or TOML file (``--rules /path/rules.toml`` or the ``SER_RULES``
setting) or inline JSON (``SER_RULES='[{"name": ..., "metric": ..., "op": ">=",
"threshold": ...}]'``); the edges read the setting and pass it to :func:`load_rules`, which
returns None when nothing is set. A TOML file holds ``[[rules]]`` tables; a JSON file holds a
list or ``{"rules": [...]}``.

A model version trained with calibration stores an *operating point* (rules and a confidence
floor chosen on its training speakers, :mod:`etl.training.calibration`); scoring uses it when no rules are
configured (:func:`resolve_operating_point`). Rules given by the user always win; models without
an operating point use the built-in defaults (:data:`DEFAULT_RULES`) and abstain nothing.
"""

from __future__ import annotations

import json
import math
import operator
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from etl.scoring.call_metrics import CallMetrics
from etl.scoring.summaries import SummaryStats

# A rule's comparison by its ``op``; numpy arrays compare element-wise through the same map.
COMPARISONS: dict[str, Callable[[Any, Any], Any]] = {
    ">=": operator.ge, ">": operator.gt, "<=": operator.le, "<": operator.lt}
SUMMARY_METRICS: tuple[str, ...] = tuple(f.name for f in fields(SummaryStats)
                                         if f.name != "emotion_mix")
CONVERSATION_METRICS: tuple[str, ...] = tuple(f.name for f in fields(CallMetrics))
METRICS = frozenset(SUMMARY_METRICS + CONVERSATION_METRICS)
GROUP_KEYS = ("all", "any")
_RULE_KEYS = ("name", "description", "metric", "op", "threshold", *GROUP_KEYS)
_CONDITION_KEYS = ("metric", "op", "threshold", *GROUP_KEYS)

Values = Mapping[str, float | None]


def metric_values(summary: SummaryStats,
                  metrics: CallMetrics | None = None) -> dict[str, float | None]:
    """Metric name -> value of one call, as rules see it (conversation metrics None without
    ``metrics``)."""
    values: dict[str, float | None] = {name: getattr(summary, name) for name in SUMMARY_METRICS}
    values.update({name: getattr(metrics, name) if metrics is not None else None
                   for name in CONVERSATION_METRICS})
    return values


def _fmt(value: float) -> str:
    return f"{value:.3g}"


@dataclass(frozen=True, slots=True)
class Condition:
    """``metric op threshold`` on one call's :func:`metric_values`."""

    metric: str
    op: str
    threshold: float

    def holds(self, values: Values) -> bool:
        value = values.get(self.metric)
        return (value is not None and not math.isnan(float(value))
                and COMPARISONS[self.op](float(value), self.threshold))

    def held(self, values: Values) -> list[Condition]:
        return [self] if self.holds(values) else []

    def reason(self, values: Values) -> str:
        value = values.get(self.metric)
        shown = "None" if value is None else _fmt(float(value))
        return f"{self.metric} = {shown} {self.op} {self.threshold:g}"

    def __str__(self) -> str:
        return f"{self.metric} {self.op} {self.threshold:g}"

    def as_data(self) -> dict[str, object]:
        return {"metric": self.metric, "op": self.op, "threshold": self.threshold}


@dataclass(frozen=True, slots=True)
class Group:
    """``all`` (every part holds) or ``any`` (at least one holds) of conditions or groups."""

    mode: str
    parts: tuple[Node, ...]

    def holds(self, values: Values) -> bool:
        test = all if self.mode == "all" else any
        return test(part.holds(values) for part in self.parts)

    def held(self, values: Values) -> list[Condition]:
        """The leaf conditions that held (all of them for an ``all`` that holds)."""
        return [c for part in self.parts for c in part.held(values)]

    def __str__(self) -> str:
        return f"{self.mode}({', '.join(str(p) for p in self.parts)})"

    def as_data(self) -> dict[str, object]:
        return {self.mode: [part.as_data() for part in self.parts]}


Node = Condition | Group


@dataclass(frozen=True, slots=True)
class EscalationRule:
    """A named rule: flat (``metric op threshold``) or compound (``when``: an all/any group).

    A flat rule keeps ``when`` None; a compound rule leaves ``metric`` empty.
    """

    name: str
    metric: str = ""
    threshold: float = 0.0
    op: str = ">="
    description: str = ""
    when: Group | None = None

    def __post_init__(self) -> None:
        if self.when is not None:
            if self.metric:
                raise ValueError(f"escalation rule {self.name!r}: give either metric/op/threshold "
                                 "or all/any, not both")
            return
        if not self.metric:
            raise ValueError(f"escalation rule {self.name!r}: needs a metric (with op and "
                             "threshold) or an all = [...] / any = [...] list of conditions")
        _check_condition(self.metric, self.op, rule=self.name)

    @property
    def condition(self) -> Node:
        """The rule as one condition tree (a flat rule is a single condition)."""
        return self.when if self.when is not None else Condition(self.metric, self.op,
                                                                 self.threshold)

    @property
    def metrics(self) -> frozenset[str]:
        """Every metric the rule reads."""
        return frozenset(_leaves(self.condition))

    def fires(self, values: SummaryStats | Values) -> bool:
        return self.condition.holds(_values(values))

    def reason(self, values: SummaryStats | Values) -> str:
        """The conditions that held, with their values, and the description."""
        vals = _values(values)
        held = self.condition.held(vals)
        return " and ".join(c.reason(vals) for c in held) + (
            f" ({self.description})" if self.description else "")

    def __str__(self) -> str:
        return str(self.condition)


def _leaves(node: Node) -> list[str]:
    if isinstance(node, Condition):
        return [node.metric]
    return [m for part in node.parts for m in _leaves(part)]


def _values(values: SummaryStats | Values) -> Values:
    return metric_values(values) if isinstance(values, SummaryStats) else values


def _check_condition(metric: str, op: str, *, rule: str, where: str = "") -> None:
    if metric not in METRICS:
        raise ValueError(f"escalation rule {rule!r}{where}: unknown metric {metric!r}; choose "
                         f"one of {', '.join(sorted(METRICS))}")
    if op not in COMPARISONS:
        raise ValueError(f"escalation rule {rule!r}{where}: op {op!r} is not one of "
                         f"{', '.join(COMPARISONS)}")


DEFAULT_RULES: tuple[EscalationRule, ...] = (
    EscalationRule("customer_negative_share", "negative_share_customer", 0.5,
                   description="customer negative for half of their speech"),
    EscalationRule("customer_negative_streak", "longest_negative_streak_s", 20.0,
                   description="customer negative for 20 s in a row"),
    EscalationRule("customer_worsening", "customer_trend", 0.3,
                   description="customer much more negative at the end than at the start"),
    EscalationRule("overtalk", "overtalk_share", 0.2,
                   description="both talking at once for a fifth of the call"),
)


@dataclass(frozen=True, slots=True)
class Escalation:
    rule: str
    reason: str


def evaluate(values: SummaryStats | Values,
             rules: Sequence[EscalationRule] = DEFAULT_RULES) -> Escalation | None:
    """The first rule (in order) that fires, with a reason naming every rule that fired.

    ``values`` is a call's :func:`metric_values` (summary and conversation metrics); a bare
    :class:`~etl.scoring.summaries.SummaryStats` leaves the conversation metrics None.
    """
    vals = _values(values)
    fired = [rule for rule in rules if rule.fires(vals)]
    if not fired:
        return None
    reason = "; ".join(rule.reason(vals) for rule in fired)
    return Escalation(fired[0].name, reason)


# --------------------------------------------------------------------------------------------
# Reading and writing rule files
# --------------------------------------------------------------------------------------------


def _threshold(value: object, *, rule: str, where: str) -> float:
    try:
        if isinstance(value, bool):  # TOML/JSON true is not a threshold, though float() takes it
            raise TypeError
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ValueError(f"escalation rule {rule!r}{where}: threshold {value!r} is not a "
                         "number") from None


def _group_key(entry: Mapping[str, object], *, rule: str, where: str) -> str | None:
    """``"all"``/``"any"`` when ``entry`` is a group, None for a plain condition."""
    groups = [k for k in GROUP_KEYS if k in entry]
    if len(groups) > 1 or (groups and ({"metric", "op", "threshold"} & set(entry))):
        raise ValueError(f"escalation rule {rule!r}{where}: use one of metric/op/threshold, "
                         "all = [...] or any = [...]")
    return groups[0] if groups else None


def _parse_node(entry: object, *, rule: str, where: str) -> Node:
    """One condition (``{metric, op, threshold}``) or group (``{all|any: [...]}``)."""
    table = entry if isinstance(entry, Mapping) else None
    if table is None:
        raise ValueError(f"escalation rule {rule!r}{where}: a condition must be a table "
                         f"{{metric, op, threshold}} or {{all|any = [...]}}, not {entry!r}")
    entry = table
    unknown = sorted(set(entry) - set(_CONDITION_KEYS))
    if unknown:
        raise ValueError(f"escalation rule {rule!r}{where}: unknown key(s) {unknown}; a "
                         f"condition takes {', '.join(_CONDITION_KEYS)}")
    mode = _group_key(entry, rule=rule, where=where)
    if mode is not None:
        return _parse_group(mode, entry[mode], rule=rule, where=where)
    missing = [k for k in ("metric", "threshold") if k not in entry]
    if missing:
        raise ValueError(f"escalation rule {rule!r}{where}: condition {dict(entry)} is missing "
                         f"{', '.join(missing)}")
    metric, op = str(entry["metric"]), str(entry.get("op", ">="))
    _check_condition(metric, op, rule=rule, where=where)
    return Condition(metric, op, _threshold(entry["threshold"], rule=rule, where=where))


def _parse_group(mode: str, parts: object, *, rule: str, where: str) -> Group:
    if not isinstance(parts, list) or not parts:
        raise ValueError(f"escalation rule {rule!r}{where}: {mode} must be a non-empty list of "
                         "conditions")
    return Group(mode, tuple(_parse_node(p, rule=rule, where=f"{where}, {mode}[{i + 1}]")
                             for i, p in enumerate(parts)))


def rule_from_data(entry: Mapping[str, object]) -> EscalationRule:
    """One rule from a parsed table: ``{name, metric, op, threshold}`` or ``{name, all|any}``."""
    name = entry.get("name")
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"escalation rule {dict(entry)} needs a name")
    unknown = sorted(set(entry) - set(_RULE_KEYS))
    if unknown:
        raise ValueError(f"escalation rule {name!r}: unknown key(s) {unknown}; allowed: "
                         f"{', '.join(_RULE_KEYS)}")
    description = str(entry.get("description", ""))
    mode = _group_key(entry, rule=name, where="")
    if mode is not None:
        return EscalationRule(name, description=description,
                              when=_parse_group(mode, entry[mode], rule=name, where=""))
    node = _parse_node({k: v for k, v in entry.items() if k in ("metric", "op", "threshold")},
                       rule=name, where="")
    assert isinstance(node, Condition)
    return EscalationRule(name, node.metric, node.threshold, node.op, description=description)


def rules_from_data(data: object) -> list[EscalationRule]:
    """Rules from parsed JSON/TOML: a list of tables or ``{"rules": [...]}``."""
    if isinstance(data, Mapping):
        data = data.get("rules")
    if not isinstance(data, list) or not all(isinstance(r, Mapping) for r in data):
        raise ValueError("escalation rules must be a list of {name, metric, op, threshold} or "
                         "{name, all|any = [conditions]} tables (or {\"rules\": [...]})")
    rules = [rule_from_data(entry) for entry in data]
    names = [r.name for r in rules]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ValueError(f"escalation rule names must be unique; repeated: {', '.join(twice)}")
    return rules


def load_rules(source: str | Path | None = None) -> tuple[EscalationRule, ...] | None:
    """The configured rules (as :class:`~etl.scoring.config.ScoringConfig` holds them): from
    ``source`` (a .json/.toml path or inline JSON), or None when no source is set (scoring then
    takes the model's operating point, else :data:`DEFAULT_RULES`)."""
    if source is None or str(source).strip() == "":
        return None
    return tuple(read_rules(source))


def read_rules(source: str | Path) -> list[EscalationRule]:
    """Rules from a .json/.toml path or inline JSON.

    Raises
    ------
    ValueError
        The file is missing or not valid TOML/JSON, or a rule is malformed.
    """
    text = str(source).strip()
    if text.startswith(("[", "{")):
        return rules_from_data(_parse(text, json.loads, what="inline JSON"))
    path = Path(text).expanduser()
    if not path.is_file():
        raise ValueError(f"escalation rules file {path} does not exist")
    parser = tomllib.loads if path.suffix.lower() == ".toml" else json.loads
    return rules_from_data(_parse(path.read_text(), parser, what=str(path)))


def _parse(text: str, parser: Callable[[str], object], *, what: str) -> object:
    try:
        return parser(text)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ValueError(f"escalation rules {what}: not valid "
                         f"{'TOML' if parser is tomllib.loads else 'JSON'}: {exc}") from None


def rules_as_data(rules: Sequence[EscalationRule]) -> list[dict[str, object]]:
    """JSON-ready form (stored with each batch so a result says which rules made it)."""
    return [{"name": r.name, **r.when.as_data()} if r.when is not None else
            {"name": r.name, "metric": r.metric, "op": r.op, "threshold": r.threshold}
            for r in rules]


@dataclass(frozen=True, slots=True)
class OperatingPoint:
    """The rules and confidence floor a batch is scored with, and where they came from."""

    rules: tuple[EscalationRule, ...]
    confidence_floor: float
    source: str  # "configured", "site", "model", "defaults"


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
        Rules from ``--rules`` / ``SER_RULES``; None (what :func:`load_rules` returns when
        nothing is set) means "not configured". Any sequence is configured, even one that
        repeats the built-in numbers.
    calibration
        ``model_versions.params["calibration"]`` (None for models trained before it).
    confidence_floor
        Explicit floor (overrides the model's); None = the model's, or 0 (abstain nothing).
    """
    point = (calibration or {}).get("operating_point")
    stored = point if isinstance(point, Mapping) else None
    model_floor = float(stored.get("confidence_floor") or 0.0) if stored else 0.0  # type: ignore[arg-type]
    floor = float(confidence_floor) if confidence_floor is not None else model_floor
    if configured is not None:
        return OperatingPoint(tuple(configured), floor, "configured")
    if stored and stored.get("rules"):
        # a site point (etl/reviews) replaces the model's and says so
        return OperatingPoint(tuple(rules_from_data(list(stored["rules"]))), floor,  # type: ignore[call-overload]
                              "site" if stored.get("source") == "site" else "model")
    return OperatingPoint(DEFAULT_RULES, floor, "defaults")
