"""Which registered model scores audio of a given bandwidth (the model's feature channel).

``resolve_scoring_model(session, ref, bandwidth=...)`` picks the model for the audio's channel:
``<alias>-telephony`` (then ``<alias>`` if it is a telephony model) for narrowband audio,
``<alias>-telephony`` / ``<alias>-studio`` / ``<alias>`` for wideband. A studio model is never
applied to narrowband audio unless asked for (:class:`ModelChannelError`).

Functions take a Session and never commit: callers own the transaction.
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from db.models import FeatureSet, ModelVersion, RegisteredModel
from etl.training.registry import (
    DEFAULT_ALIAS,
    ModelNotFoundError,
    alias_target,
    resolve_version,
)


class ModelChannelError(ModelNotFoundError):
    """The model a reference names was trained for another channel than the audio's."""


BANDWIDTHS = ("narrowband", "wideband")
CHANNEL_OF_BANDWIDTH = {"narrowband": "telephony", "wideband": "studio"}


def channel_alias(alias: str, channel: str) -> str:
    """The per-channel alias of ``alias``: ``production`` -> ``production-telephony``."""
    return f"{alias}-{channel}"


def model_channel(session: Session, mv: ModelVersion) -> str:
    """The feature channel (``studio``/``telephony``) model version ``mv`` was trained on."""
    row = session.get(FeatureSet, mv.feature_set_id)
    if row is None:
        raise ModelNotFoundError(f"feature set id {mv.feature_set_id} does not exist")
    return str(row.channel)


def resolve_scoring_model(
    session: Session, ref: str = DEFAULT_ALIAS, *, bandwidth: str,
    allow_channel_mismatch: bool = False,
) -> ModelVersion:
    """The model version to score audio of ``bandwidth`` with, given the user's ``ref``.

    ``ref`` an alias (``production``): narrowband audio takes ``production-telephony``, else
    ``production`` if that is a telephony model; wideband audio (16 kHz VoIP calls) takes
    ``production-telephony`` too when it is set (a telephony model hears wideband audio
    band-limited, as it was trained, and a batch that mixes lines gets one model that serves
    all of them), else ``production-studio``, else ``production``. ``ref`` a version id or ``name:version``: that version,
    checked against the audio.

    Parameters
    ----------
    bandwidth : "narrowband" (phone audio: 8 kHz or nothing above ~3.4 kHz) or "wideband"
    allow_channel_mismatch : score narrowband audio with a studio model anyway (the caller
        should record a warning); default refuses

    Raises
    ------
    ModelChannelError
        Only a studio model is available for narrowband audio (the message says what to do).
    ModelNotFoundError
        ``ref`` matches nothing.
    """
    if bandwidth not in BANDWIDTHS:
        raise ValueError(f"bandwidth must be one of {', '.join(BANDWIDTHS)}, not {bandwidth!r}")
    ref = ref.strip()
    narrow = bandwidth == "narrowband"
    is_alias = not ref.isdigit() and ":" not in ref
    if is_alias:
        order = ([channel_alias(ref, "telephony"), ref] if narrow else
                 [channel_alias(ref, "telephony"), channel_alias(ref, "studio"), ref])
        for name in order:
            mv = alias_target(session, name)
            if mv is not None and (not narrow or model_channel(session, mv) == "telephony"):
                return mv
    mv = resolve_version(session, ref)  # raises ModelNotFoundError when nothing matches
    if narrow and model_channel(session, mv) != "telephony" and not allow_channel_mismatch:
        registered = session.get(RegisteredModel, mv.registered_model_id)
        label = f"{registered.name if registered else '?'} v{mv.version} (id {mv.id})"
        where = (f"alias {ref!r} points at a studio-trained model {label} and no "
                 f"{channel_alias(ref, 'telephony')!r} alias is set" if is_alias
                 else f"{ref!r} is a studio-trained model {label}")
        raise ModelChannelError(
            f"narrowband (phone) audio: {where}; its scores on phone audio are not trustworthy. Train a telephony model (`ser "
            f"features` then `ser train`, whose defaults train for phone audio; the first one "
            f"becomes {channel_alias(DEFAULT_ALIAS, 'telephony')!r}) or point an alias at one "
            f"(`ser models promote ID --alias {channel_alias(DEFAULT_ALIAS, 'telephony')}`)")
    return mv
