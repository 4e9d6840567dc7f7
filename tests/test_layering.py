"""The package layering holds: policy_engine and breakglass never import gateway, aiohttp or each other; gateway has no import cycle."""

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


def module_name(path: Path, root: Path) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_imports(root: Path, package: str) -> dict[str, set[str]]:
    """Each module of ``package`` and the package's modules it imports anywhere: at the top, under TYPE_CHECKING, inside functions."""
    paths = {module_name(path, root): path for path in sorted((root / package).rglob("*.py"))}
    graph: dict[str, set[str]] = {}
    for name, path in paths.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
            if isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names if alias.name in paths)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    base = ".".join([*anchor, *([node.module] if node.module else [])])
                for alias in node.names:
                    if f"{base}.{alias.name}" in paths:
                        found.add(f"{base}.{alias.name}")
                    elif base in paths:
                        found.add(base)
        graph[name] = found - {name}
    return graph


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, edges = work[-1]
            for nxt in edges:
                if nxt not in index:
                    index[nxt] = low[nxt] = len(index)
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(sorted(graph[nxt]))))
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        cycles.append(sorted(component))
    return cycles


def test_gateway_has_no_import_cycle() -> None:
    """No gateway module imports itself through others, counting type-only imports and imports inside functions.

    So every type keys.py names lives in a module that never imports keys.py.
    """
    cycles = import_cycles(package_imports(ROOT, "gateway"))

    assert [] == cycles


def test_a_cycle_through_type_checking_or_a_function_is_found(tmp_path: Path) -> None:
    """A cycle closed only by an import under TYPE_CHECKING or inside a function is still a cycle; a one-way import is not."""
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from pkg.b import B\n")
    (package / "b.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg import c\nB = 1\n")
    (package / "c.py").write_text("def f() -> None:\n    from .a import B\n")
    (package / "d.py").write_text("import pkg.a\n")

    cycles = import_cycles(package_imports(tmp_path, "pkg"))

    assert [["pkg.a", "pkg.b", "pkg.c"]] == cycles
