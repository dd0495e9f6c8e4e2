"""Configuration: the one settings object, read from the environment and an optional ``.env``.

The bottom of the tree: it imports nothing of the project. Only the edges read it (the ``ser``
CLI, the flow entry functions in ``flows/``, ``db/migrations/env.py`` and the benches); they pass
values down, so ``etl/``, ``reports/`` and ``db/`` never see it.
"""

from config.settings import Settings, get_settings

__all__ = ["Settings", "get_settings"]
