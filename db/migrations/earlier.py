"""An earlier migration's module by its revision id.

Later migrations build on an earlier one's view DDL (the base of their change and the target of
their downgrade), and tests compare against it; the version files are not an importable package.
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path
from types import ModuleType

VERSIONS = Path(__file__).resolve().parent / "versions"


@functools.cache
def revision_module(revision: str) -> ModuleType:
    """The module of the migration file whose name holds ``revision``."""
    path = next(VERSIONS.glob(f"*_{revision}_*.py"))
    spec = importlib.util.spec_from_file_location(f"_ser_migration_{revision}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
