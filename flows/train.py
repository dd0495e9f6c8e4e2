"""Training flow: evaluate speaker-independently, register the model version, maybe promote it.

Two thin tasks over ``etl.training.train`` / ``etl.training.registry``; each owns its transaction. Training and
registering are one transaction (a failure registers nothing); promotion is a second one so a
registered version survives a promotion problem. No retries: training is deterministic, a
retry would fail the same way.

The first model of a channel also becomes that channel's alias (``production-telephony`` or
``production-studio``, `etl.training.channel_selection.channel_alias`) when none is set, and
``production`` itself when no model holds it yet, so ``ser score`` finds a model that matches the
audio's channel right after the first ``ser train``
(`etl.training.channel_selection.resolve_scoring_model`).
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from prefect import flow, task
from prefect.cache_policies import NONE

from db.engine import cached_engine, session_scope
from etl.training.channel_selection import channel_alias
from etl.training.config import TrainConfig
from etl.training.registry import DEFAULT_ALIAS, alias_target, promote_if_better, set_alias
from etl.training.train import train_model
from flows.database import database_url


@task(name="train-and-register", cache_policy=NONE)
def train_and_register(url: str, config: TrainConfig, name: str | None,
                       show_progress: bool) -> dict[str, Any]:
    with session_scope(cached_engine(url)) as session:
        result = train_model(session, config, name=name, progress=show_progress)
    return result.as_dict()


@task(name="promote-if-better", cache_policy=NONE)
def promote_task(url: str, model_version_id: int, alias: str) -> dict[str, Any]:
    with session_scope(cached_engine(url)) as session:
        decision = promote_if_better(session, model_version_id, alias=alias)
    return asdict(decision)


@task(name="channel-alias", cache_policy=NONE)
def channel_alias_task(url: str, model_version_id: int, alias: str, channel: str) -> list[str]:
    """Point ``<alias>-<channel>``, and ``<alias>`` itself, at the version where unset; returns
    the aliases set."""
    moved = []
    with session_scope(cached_engine(url)) as session:
        for name, why in ((channel_alias(alias, channel), f"first {channel} model"),
                          (alias, f"first model ({channel})")):
            if alias_target(session, name) is None:
                set_alias(session, model_version_id, alias=name, reason=f"{why} (ser train)")
                moved.append(name)
    return moved


@flow(name="train")
def train_flow(
    config: TrainConfig,
    name: str | None = None,
    promote_if_better: bool = False,
    alias: str = DEFAULT_ALIAS,
    show_progress: bool = False,
    channel_alias_if_unset: bool = True,
) -> dict[str, Any]:
    """Train ``config`` on stored features and register it; returns the result (+ promotion).
    ``config`` holds every training switch and its telephony-only rules
    (`etl.training.config.TrainConfig`)."""
    url = database_url()
    result = train_and_register(url, config, name, show_progress)
    result["promotion"] = (promote_task(url, result["model_version_id"], alias)
                           if promote_if_better else None)
    result["aliases_set"] = (channel_alias_task(url, result["model_version_id"], alias,
                                                config.channel)
                             if channel_alias_if_unset else [])
    return result
