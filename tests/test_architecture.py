"""The package's layering: evaluation never reaches into training, and the lowest layers stay
free of the higher ones (docs/architecture.md)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "rvsl"
#: package -> packages it must never import
FORBIDDEN = {
    "search": ("rvsl.training", "rvsl.evaluation", "rvsl.cli"),
    "evaluation": ("rvsl.training", "rvsl.search", "rvsl.cli"),
    "inference": ("rvsl.training", "rvsl.evaluation", "rvsl.search", "rvsl.cli"),
    "utils": ("rvsl.training", "rvsl.evaluation", "rvsl.inference", "rvsl.search", "rvsl.cli"),
    "metrics": ("rvsl.training", "rvsl.evaluation", "rvsl.inference", "rvsl.search", "rvsl.cli"),
    "losses": (
        "rvsl.training",
        "rvsl.evaluation",
        "rvsl.inference",
        "rvsl.search",
        "rvsl.cli",
        "rvsl.data",
    ),
    "models": (
        "rvsl.training",
        "rvsl.evaluation",
        "rvsl.inference",
        "rvsl.search",
        "rvsl.cli",
        "rvsl.data",
    ),
    "data": ("rvsl.training", "rvsl.evaluation", "rvsl.inference", "rvsl.search", "rvsl.cli"),
}


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_a_lower_package_never_imports_a_higher_one(package):
    offending = {
        f"{path.relative_to(PACKAGE)} imports {name}"
        for path in (PACKAGE / package).rglob("*.py")
        for name in _imports(path)
        if name.startswith(FORBIDDEN[package])
    }
    assert not offending, sorted(offending)


def test_no_source_file_grows_past_400_lines_and_the_module_stays_under_300():
    sizes = {p: len(p.read_text().splitlines()) for p in PACKAGE.rglob("*.py")}
    assert not {str(p.relative_to(PACKAGE)): n for p, n in sizes.items() if n > 400}
    assert sizes[PACKAGE / "training" / "module.py"] < 300
