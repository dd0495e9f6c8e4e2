"""Provenance of a model version: the code it was trained with.

``code_version`` is what ``register_model_version`` (``etl.training.registry``) stores in
``model_versions.code_version``, so every model names the source tree that made it.
"""

from __future__ import annotations

import subprocess
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path


def code_version() -> str:
    """``git describe --always --dirty`` of the source tree, else the installed package version."""
    root = Path(__file__).resolve().parent.parent
    try:
        out = subprocess.run(
            ["git", "describe", "--always", "--dirty", "--tags"], cwd=root, capture_output=True,
            text=True, timeout=5, check=True,
        )
        described = out.stdout.strip()
        if described:
            return f"git:{described}"[:64]
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        return f"ser-analytics=={version('ser-analytics')}"
    except PackageNotFoundError:
        return "unknown"
