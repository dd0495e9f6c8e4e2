"""The nightly flow as a Prefect deployment on a cron schedule (``ser serve``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from config import get_settings
from flows.nightly import DEPLOYMENT_NAME, nightly_flow


def deployment_options(
    *,
    name: str = DEPLOYMENT_NAME,
    cron: str | None = None,
    inbox: str | None = None,
    model_ref: str = "production",
) -> dict[str, Any]:
    """Keyword arguments shared by ``nightly_flow.serve`` and ``nightly_flow.to_deployment``.

    Whatever a caller passes, a run scores only the inbox of the serving process's settings
    (``SER_INBOX``) or a folder inside it (:func:`flows.nightly.nightly_flow`); ``ser serve``
    puts its options into that process's environment.
    """
    settings = get_settings()
    parameters: dict[str, Any] = {"inbox": str(Path(inbox).expanduser().resolve()) if inbox
                                  else str(settings.inbox_path), "model_ref": model_ref}
    return {"name": name, "cron": cron or settings.nightly_cron, "parameters": parameters,
            "description": "Score new call recordings in the inbox with the production model.",
            "tags": ["ser", "nightly"]}


def build_deployment(**kwargs: Any) -> Any:
    """The deployment object of :func:`nightly_flow` on ``cron`` (default Settings.nightly_cron).

    Returns a ``prefect.deployments.runner.RunnerDeployment``; building it needs no server.
    """
    return nightly_flow.to_deployment(**deployment_options(**kwargs))


def serve(**kwargs: Any) -> None:  # pragma: no cover - blocks until interrupted
    """Run the nightly deployment in this process (``ser serve``); blocks."""
    nightly_flow.serve(**deployment_options(**kwargs))
