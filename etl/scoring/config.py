"""How calls are scored: :class:`ScoringConfig`, the settings a batch is cut, scored and
summarised with (stored in ``batches.options``), and the operating point it gives a model.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from etl.audio.vad import VadConfig
from etl.scoring.call_metrics import MetricsConfig
from etl.scoring.escalation import (
    EscalationRule,
    OperatingPoint,
    resolve_operating_point,
    rules_as_data,
)
from etl.scoring.role_prior import AGENT_NEGATIVE_PRIOR

if TYPE_CHECKING:
    from etl.training.loading import LoadedModel


@dataclass(frozen=True, slots=True)
class ScoringConfig:
    """How calls are cut, scored and summarised.

    Attributes
    ----------
    stereo_roles
        Role per channel of a two-channel file without explicit roles (left, right).
    mono_role
        Role of a single-channel file.
    min_window_s, max_window_s, window_bridge_s
        Utterance windows scored on their own (`etl.audio.vad.windows`): speech regions closer
        than ``window_bridge_s`` form one utterance; shorter utterances are talk time but not
        scored.
    max_duration_s
        Longer recordings fail ("absurdly long") instead of tying up a worker.
    block_s
        Audio decoded per block (bounds memory on long recordings).
    settle_s
        A recording (or ``calls.csv``) changed less than this long ago is left for the next run
        (`etl.runs.inbox.discover_calls`): the nightly inbox waits for copies to finish; 0 (a
        folder named on the command line) takes every file as it is.
    stale_claim_minutes
        A claim older than this is considered abandoned (its worker died) and is taken over.
    rules
        Escalation rules; None (not configured: what :func:`etl.scoring.escalation.load_rules`
        returns when nothing is set) = the model's operating point, else the built-in defaults
        (models trained without one).
    confidence_floor
        Segments whose top probability is below it are abstained; None = the model's operating
        point (0 for models without one).
    allow_channel_mismatch
        Score phone (narrowband) audio with a studio-trained model anyway, with a warning; by
        default such a call fails, because a studio model on phone audio flags almost every call.
    metrics
        Thresholds of the conversation metrics (turns, interruptions, long silences, speaking
        rate: :mod:`etl.scoring.call_metrics`).
    agent_negative_prior
        Share of the agent's speech expected to be negative; the agent's segment probabilities
        are moved from the models' class-balanced prior to it (:mod:`etl.scoring.role_prior`).
        None scores agents with the training prior.
    """

    stereo_roles: tuple[str, str] = ("agent", "customer")
    mono_role: str = "customer"
    min_window_s: float = 0.5
    max_window_s: float = 4.0
    window_bridge_s: float = 0.5
    min_duration_s: float = 0.5
    max_duration_s: float = 3 * 3600.0
    block_s: float = 600.0
    settle_s: float = 0.0
    context_s: float = 0.5
    vad: VadConfig = field(default_factory=VadConfig)
    streak_gap_s: float = 2.0
    stale_claim_minutes: float = 30.0
    rules: tuple[EscalationRule, ...] | None = None
    retry_failed: bool = False
    confidence_floor: float | None = None
    allow_channel_mismatch: bool = False
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    agent_negative_prior: float | None = AGENT_NEGATIVE_PRIOR

    def options(self) -> dict[str, Any]:
        """JSON-ready record stored in ``batches.options`` (``"rules": "model"`` = the model's
        operating point or, for a model without one, the built-in defaults)."""
        data = asdict(self)
        data["rules"] = "model" if self.rules is None else rules_as_data(self.rules)
        return data

    def operating_point(self, model: LoadedModel) -> OperatingPoint:
        """Rules and confidence floor for ``model`` (see ``rules`` and ``confidence_floor``)."""
        return resolve_operating_point(self.rules, model_calibration(model),
                                       confidence_floor=self.confidence_floor)


def model_calibration(model: object) -> Mapping[str, Any] | None:
    """The calibration record of a loaded model (None for models trained without one)."""
    record = getattr(model, "calibration", None)
    if record is None:
        params = getattr(model, "params", None)
        record = params.get("calibration") if isinstance(params, Mapping) else None
    return record if isinstance(record, Mapping) else None
