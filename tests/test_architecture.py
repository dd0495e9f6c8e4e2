"""The shape of the code: the import contracts of pyproject.toml hold, and benches stand alone.

The README's test command (``python -m pytest -m "not slow"``) thereby checks the layers too,
not only CI.
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


# --------------------------------------------------------------------------------------------
# Public surfaces: each etl concern's __init__ lists what callers outside it may import
# --------------------------------------------------------------------------------------------

SURFACES = ("audio", "corpora", "features", "runs", "scoring", "synthetic", "training")
# Files being changed by others when this contract came in import these names from a module
# that only re-imports them; their next change imports from the home module instead.
KNOWN_DETOURS = {("bench/voice_features.py", "etl.features.extraction", "feature_spec")}


def _defined_at_top(module: str) -> set[str]:
    """Names a module defines itself (functions, classes, assignments), not those it imports."""
    tree = ast.parse((ROOT / (module.replace(".", "/") + ".py")).read_text())
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    return names


@pytest.mark.parametrize("concern", SURFACES)
def test_each_public_name_is_defined_in_the_module_its_package_names(concern: str) -> None:
    import importlib

    from etl.public import home_of

    package = importlib.import_module(f"etl.{concern}")
    assert package.__all__, f"etl/{concern}/__init__.py lists no public names"
    wrong = {}
    for name in package.__all__:
        home = home_of(package, name)
        assert home is not None and home.startswith(f"etl.{concern}."), (name, home)
        if name not in _defined_at_top(home):
            wrong[name] = home
        getattr(package, name)  # resolves (imports its module)
    assert not wrong, f"etl/{concern}/__init__.py names modules that do not define: {wrong}"


def _callers() -> list[Path]:
    """The product and the benches (tests may reach into any module they test)."""
    paths = [p for top in ("config", "db", "etl", "flows", "reports", "ser", "bench")
             for p in (ROOT / top).rglob("*.py")]
    return sorted(p for p in paths if "migrations" not in p.parts)


def test_callers_import_only_public_names_from_their_home_modules() -> None:
    """Outside ``etl/<concern>``, a name of it is imported from the package (``from etl.scoring
    import score_recording``) or from the module that defines it, and only if the package's
    ``__all__`` lists it; modules themselves may be imported (``from etl.audio import dsp``)."""
    import importlib

    from etl.public import home_of

    packages = {c: importlib.import_module(f"etl.{c}") for c in SURFACES}
    problems = []
    for path in _callers():
        rel = path.relative_to(ROOT).as_posix()
        for node in ast.walk(ast.parse(path.read_text(), filename=rel)):
            if not (isinstance(node, ast.ImportFrom) and node.module and node.level == 0):
                continue
            parts = node.module.split(".")
            if parts[0] != "etl" or len(parts) < 2 or parts[1] not in packages \
                    or rel.startswith(f"etl/{parts[1]}/"):
                continue
            for alias in node.names:
                name = alias.name
                folder = ROOT.joinpath(*parts)
                if (folder / f"{name}.py").exists() or (folder / name / "__init__.py").exists():
                    continue  # a module (or subpackage) of the package
                home = home_of(packages[parts[1]], name)
                if home is None:
                    problems.append(f"{rel}:{node.lineno} imports {node.module}.{name}, which "
                                    f"etl/{parts[1]}/__init__.py does not list: add it there "
                                    "if it is meant for callers outside the package")
                elif len(parts) > 2 and node.module != home \
                        and (rel, node.module, name) not in KNOWN_DETOURS:
                    problems.append(f"{rel}:{node.lineno} imports {name} from {node.module}; "
                                    f"it lives in {home}")
    assert not problems, "\n".join(problems)
