"""The shape of the code: the import contracts of pyproject.toml hold, and benches stand alone.

``python -m pytest`` (the README's test command) thereby checks the layers too, not only CI.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_import_contracts_hold(monkeypatch: pytest.MonkeyPatch,
                               capsys: pytest.CaptureFixture[str]) -> None:
    from importlinter.cli import lint_imports

    monkeypatch.chdir(ROOT)  # lint-imports reads ./pyproject.toml
    code = lint_imports(no_cache=True, no_logo=True)
    assert code == 0, capsys.readouterr().out


def _imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


@pytest.mark.parametrize("path", sorted((ROOT / "bench").glob("*.py")), ids=lambda p: p.name)
def test_benches_import_no_test_code(path: Path) -> None:
    """Benches run without the test suite: shared fixtures live in the package (etl.synthetic)."""
    from_tests = sorted(m for m in _imported_modules(path) if m.split(".")[0] in ("tests", "conftest"))
    assert not from_tests, f"{path.name} imports {from_tests}"
