"""What to train: :class:`TrainConfig` and the defaults of speaker-independent training."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from etl.features.specs import feature_spec, has_phone_copies, voice_columns

DEFAULT_SEED = 0
DEFAULT_FOLDS = 5
# Call (telephony) models: speaker-normalised, and every role of a call is shrunk toward the
# nearest training speakers with this many prior rows (a 2-minute call's customer has ~20-40
# segments, so own statistics weigh 40-57 %). Own statistics absorb what a call's line, room and
# level do to every feature; alone they would also absorb the call's emotion (a customer angry
# all call long reads neutral, and fewer such calls escalate), so the prior keeps a good part.
# Chosen on field calls (lines and levels the generator does not make) of training speakers
# only: bench/calls_accuracy.py selection mode, docs/features.md "Training for calls".
CALL_SPEAKER_PRIOR_ROWS = 30.0
# Telephony models choose their escalation operating point on this many generated calls.
DEFAULT_OPERATING_POINT_CALLS = 100


@dataclass(frozen=True, slots=True)
class TrainConfig:
    """What to train. Defaults are the project's best speaker-independent setup."""

    algorithm: str = ""  # "" = default_algorithm(feature_set)
    label_scheme: str | None = None  # None = largest scheme the data fully covers
    feature_set: str = "rich"
    channel: str = "studio"
    corpus: str | None = None  # None = every corpus (joined through canonical emotions)
    speaker_normalisation: bool = True
    class_balance: bool = True
    n_folds: int = DEFAULT_FOLDS
    seed: int = DEFAULT_SEED
    search: bool = True  # nested grid search inside the training folds
    feature_importance: bool = True
    diagnostic_random_split: bool = False
    # Also train on the phone-line copies (<set>+phone). None = wherever the feature set and
    # channel have copies (telephony, rich-based sets); True elsewhere is refused by training.
    augment: bool | None = None
    # Speaker-normalised models, at prediction: None = a group (a call's role) with at least
    # etl.training.normalise.MIN_ROWS_OWN_STATS rows uses its own statistics; a number = every group is
    # shrunk toward the nearest training speakers with this many prior rows (SpeakerPopulation);
    # "auto" = CALL_SPEAKER_PRIOR_ROWS for telephony, None for studio.
    speaker_prior_rows: float | str | None = "auto"
    # > 0: choose the escalation operating point on this many generated phone calls of the
    # training speakers, each scored by the fold model that never heard them
    # (etl.training.operating_point); 0: on pseudo-calls of clips only. Telephony only: a studio
    # model's calls would pass a phone line it was not trained for, so studio keeps 0.
    operating_point_calls: int = DEFAULT_OPERATING_POINT_CALLS
    operating_point_call_minutes: float = 2.0

    def __post_init__(self) -> None:
        # imported here: the model families load scikit-learn, and `ser train` reads these
        # defaults for its --help when the CLI starts
        from etl.training.models import VOICE_ALGORITHM, default_algorithm

        if not self.algorithm:
            object.__setattr__(self, "algorithm", default_algorithm(self.feature_set))
        elif self.algorithm == VOICE_ALGORITHM != default_algorithm(self.feature_set):
            raise ValueError(f"model family {VOICE_ALGORITHM} pools the voice encoder's columns: "
                             f"train it on a voice feature set (--set richvoice), not "
                             f"{self.feature_set!r}")
        if self.operating_point_calls < 0:
            raise ValueError(f"operating_point_calls must be >= 0, not {self.operating_point_calls}")
        if self.channel != "telephony":
            object.__setattr__(self, "operating_point_calls", 0)
        if self.augment is None:
            object.__setattr__(self, "augment", has_phone_copies(self.feature_set, self.channel))
        prior = self.speaker_prior_rows
        if prior == "auto":
            prior = CALL_SPEAKER_PRIOR_ROWS if self.channel == "telephony" else None
        elif isinstance(prior, str):
            raise ValueError(f"speaker_prior_rows must be a number, None or 'auto', not {prior!r}")
        object.__setattr__(self, "speaker_prior_rows", None if prior is None else float(prior))

    @property
    def raw_columns(self) -> int:
        """Trailing features speaker normalisation leaves as they are: the voice encoder's
        embedding of ``richvoice`` in one regression over every column (bench/voice_features.py:
        z-scored per speaker it lost evidence wherever a speaker's own statistics are few, as a
        call role's are); none for the pooled family, whose voice regression did better on
        calls of training speakers with the embedding z-scored like the rest
        (docs/features.md, `richvoice`)."""
        from etl.training.models import VOICE_ALGORITHM  # not at the top: see __post_init__

        if self.algorithm == VOICE_ALGORITHM:
            return 0
        columns = voice_columns(feature_spec(self.feature_set, self.channel))
        return int(columns.stop - columns.start)

    def population_shrinkage(self) -> dict[str, Any]:
        """``speaker_population`` keyword arguments for this config's prediction-time shrinkage."""
        raw = {"raw_columns": self.raw_columns} if self.raw_columns else {}
        if self.speaker_prior_rows is None:
            return raw
        if float(self.speaker_prior_rows) < 0:
            raise ValueError(f"speaker_prior_rows must be >= 0, not {self.speaker_prior_rows}")
        return {"prior_rows": float(self.speaker_prior_rows), "min_rows_own": float("inf"),
                **raw}
