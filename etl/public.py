"""The public names of an ``etl`` subpackage, each imported from its module on first use.

Each ``etl/<concern>/__init__.py`` lists what callers outside the concern may import (its
``__all__``) and the module each name lives in. The modules are imported lazily: importing a
light module of a package (``etl.corpora.labels``, ``etl.features.specs``) must not import its
heavy neighbours (audio decoding, the database, scikit-learn), which ``ser --help`` and every
worker process would otherwise pay for. ``tests/test_architecture.py`` checks that callers
import only these names, from these modules or from the package.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from importlib import import_module
from types import ModuleType
from typing import Any


class Exports:
    """``{module: names defined there}`` of one package; :meth:`resolve` is its module
    ``__getattr__`` (PEP 562), which imports a name's module the first time it is asked for.

    Raises
    ------
    ValueError
        A name listed under two modules.
    """

    def __init__(self, package: str, homes: Mapping[str, Sequence[str]]) -> None:
        self.package = package
        self.home: dict[str, str] = {}
        for module, names in homes.items():
            for name in names:
                if self.home.setdefault(name, module) != module:
                    raise ValueError(f"{package}: {name} listed under {self.home[name]} and "
                                     f"{module}")
        self.names = sorted(self.home)

    def resolve(self, name: str) -> Any:
        if name not in self.home:
            raise AttributeError(f"module {self.package!r} has no attribute {name!r}")
        return getattr(import_module(self.home[name]), name)


def home_of(package: ModuleType, name: str) -> str | None:
    """The module public name ``name`` of ``package`` lives in; None if it is not public."""
    exports = getattr(getattr(package, "__getattr__", None), "__self__", None)
    return exports.home.get(name) if isinstance(exports, Exports) else None
