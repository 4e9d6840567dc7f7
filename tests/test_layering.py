"""The package layering holds: policy_engine and breakglass never import gateway, aiohttp or each other."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STDLIB = set(sys.stdlib_module_names)
ALLOWED_THIRD_PARTY = {
    "policy_engine": set(),
    "breakglass": {"orjson"},
}


def imported_roots(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    roots: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


@pytest.mark.parametrize("package", sorted(ALLOWED_THIRD_PARTY))
def test_pure_packages_import_only_what_they_may(package: str) -> None:
    """Each pure package imports the standard library, itself and its short allow-list only."""
    allowed = STDLIB | {package, "__future__"} | ALLOWED_THIRD_PARTY[package]
    offenders = {
        f"{path.relative_to(ROOT)} imports {name}"
        for path in sorted((ROOT / package).rglob("*.py"))
        for name in imported_roots(path)
        if name not in allowed
    }

    assert set() == offenders


def test_every_module_starts_with_future_annotations() -> None:
    """Every module of the three packages opts into postponed annotations."""
    missing = [
        str(path.relative_to(ROOT))
        for package in ("gateway", "policy_engine", "breakglass")
        for path in sorted((ROOT / package).rglob("*.py"))
        if path.stat().st_size and "from __future__ import annotations" not in path.read_text(encoding="utf-8")
    ]

    assert [] == missing
