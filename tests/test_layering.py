"""The package layering holds: policy_engine and breakglass never import gateway, aiohttp or each other, and
inside gateway the subpackages import each other in one direction only (MAY_IMPORT, the table the README's
Layout section shows), with no import cycle between any two modules, type-only imports included."""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STDLIB = set(sys.stdlib_module_names)
ALLOWED_THIRD_PARTY = {
    "policy_engine": set(),
    "breakglass": {"orjson"},
}

LEAVES = frozenset({"keys", "errors", "metrics", "logging", "request", "gateway"})
"""Top-level modules every part of gateway may import (``gateway`` is the package itself: ``__version__``;
``request`` the value the proxy parses and the gate and identity read)."""

MAY_IMPORT: dict[str, frozenset[str]] = {
    "__main__": frozenset({"cli"}),
    "cli": frozenset({"serve", "app", "web", "proxy", "gate", "identity", "ingest", "report", "store", "config"}) | LEAVES,
    "serve": frozenset({"app", "web", "proxy", "gate", "identity", "ingest", "report", "store", "config"}) | LEAVES,
    "app": frozenset({"web", "proxy", "gate", "identity", "ingest", "report", "store", "config"}) | LEAVES,
    "web": frozenset({"proxy", "gate", "identity", "ingest", "report", "store", "config"}) | LEAVES,
    "proxy": frozenset({"gate", "identity", "ingest", "store", "config"}) | LEAVES,
    "gate": frozenset({"identity", "ingest", "store", "config"}) | LEAVES,
    "report": frozenset({"identity", "store", "config"}) | LEAVES,
    "identity": frozenset({"ingest", "store", "config"}) | LEAVES,
    "ingest": frozenset({"store", "config"}) | LEAVES,
    "store": frozenset({"config"}) | LEAVES,
    "config": frozenset({"errors", "metrics", "logging", "gateway"}),
    "keys": frozenset({"gateway"}),
    "errors": frozenset({"gateway"}),
    "metrics": frozenset({"gateway"}),
    "logging": frozenset({"gateway"}),
    "request": frozenset({"gateway"}),
    "gateway": frozenset(),
}
"""What each part of gateway may import besides itself (a subpackage of gateway/, or a top-level module).

cli and serve are on top; app wires everything below them; web and proxy speak HTTP and call gate,
identity, ingest and store; report builds on identity and store; config and the leaves are for
everyone and import nothing above them. keys.py imports nothing at run time; the types it names
under TYPE_CHECKING come from modules that never import it (test_no_import_cycles)."""

ALSO_MAY_IMPORT: dict[str, tuple[tuple[str, str], ...]] = {
    "proxy": (
        ("gateway.web.pages", "the lane answers its own errors with web's error pages (one error-body builder)"),
        ("gateway.web.problem", "the lane answers its own errors with the one problem+json builder"),
    ),
    "gate": (
        ("gateway.proxy.routing", "the gate reads the request's Route (a value)"),
        ("gateway.proxy.target", "the gate may read the canonical Target (a value)"),
    ),
    "ingest": (
        ("gateway.web.problem", "the ingest and osquery endpoints answer their errors with the one problem+json builder"),
    ),
    "identity": (
        ("gateway.web.pages", "identity answers 401/403 with web's renderers, never its handlers"),
        ("gateway.web.problem", "identity answers 401/403 with the one problem+json builder"),
        ("gateway.web.views", "identity renders its sign-in page with web's views"),
    ),
}
"""Single modules a part may import across the table, with why: value types and renderers, never handlers."""

NOT_YET: tuple[tuple[str, str, str], ...] = ()
"""Known breaches of the table, each with what removes it. test_every_exception_is_still_needed fails once one is
gone, so this list only ever shrinks."""

URL_PREFIXES = ("/.gatehouse", "/.well-known/gatehouse")


@dataclass(frozen=True)
class Edge:
    importer: str
    imported: str
    path: Path
    line: int
    type_only: bool

    def __str__(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line} imports {self.imported}"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


@cache
def modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted((ROOT / "gateway").rglob("*.py"))}


def resolve(name: str) -> str | None:
    """The most specific gateway module a dotted name refers to (a module, or the package holding the name)."""
    known = modules()
    while name:
        if name in known:
            return name
        name = name.rpartition(".")[0]
    return None


def type_checking_lines(tree: ast.Module) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                lines.update(range(child.lineno, (child.end_lineno or child.lineno) + 1))
    return lines


@cache
def edges() -> tuple[Edge, ...]:
    """Every import between gateway modules: module level, inside functions and under TYPE_CHECKING alike."""
    found: list[Edge] = []
    for name, path in modules().items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        typing_only = type_checking_lines(tree)
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(tree):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*parts, *([node.module] if node.module else [])])
                targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules() else base for alias in node.names]
            for target in targets:
                imported = resolve(target) if target.startswith("gateway") else None
                if imported is not None and imported != name:
                    found.append(Edge(name, imported, path, node.lineno, node.lineno in typing_only))
    return tuple(dict.fromkeys(found))


def part(module: str) -> str:
    """The part of gateway a module belongs to: its subpackage, or the top-level module's own name."""
    if module == "gateway":
        return "gateway"
    pieces = module.split(".")
    return pieces[1]


def explained(edge: Edge) -> bool:
    """True when the edge is one of ALSO_MAY_IMPORT's or NOT_YET's."""
    for target, _why in ALSO_MAY_IMPORT.get(part(edge.importer), ()):
        if edge.imported == target or edge.imported.startswith(target + "."):
            return True
    return any(
        (edge.importer == importer or edge.importer.startswith(importer + "."))
        and (edge.imported == imported or edge.imported.startswith(imported + "."))
        for importer, imported, _why in NOT_YET
    )


def run_time(edge: Edge) -> bool:
    """keys.py's type-only imports name the types of its keys; they are checked by the cycle rule alone."""
    return not (edge.importer == "gateway.keys" and edge.type_only)


class TestGatewayLayers:
    def test_every_module_belongs_to_a_part_of_the_table(self) -> None:
        """Each gateway module is in a subpackage (or is a top-level module) that MAY_IMPORT lists."""
        unknown = sorted(f"{path.relative_to(ROOT)} is in `{part(name)}`, which the table does not list; put it in a "
                         "subpackage of the table, or add its part to MAY_IMPORT and the README's Layout"
                         for name, path in modules().items() if part(name) not in MAY_IMPORT)

        assert [] == unknown

    def test_parts_import_only_what_the_table_allows(self) -> None:
        """An import across parts goes down the table (or is one of the named exceptions)."""
        offenders = sorted(
            f"{edge}: `{part(edge.importer)}` may import {', '.join(sorted(MAY_IMPORT[part(edge.importer)]))}"
            for edge in edges()
            if run_time(edge) and part(edge.importer) in MAY_IMPORT and part(edge.imported) != part(edge.importer)
            and part(edge.imported) not in MAY_IMPORT[part(edge.importer)] and not explained(edge)
        )

        assert [] == offenders

    def test_no_import_cycles(self) -> None:
        """No module reaches itself through imports, counting type-only and function-level imports too."""
        graph: dict[str, list[Edge]] = {name: [] for name in modules()}
        for edge in edges():
            graph[edge.importer].append(edge)

        cycles = [" -> ".join(str(e) for e in cycle) for cycle in find_cycles(graph)]

        assert [] == cycles

    def test_keys_names_only_types_from_modules_below_it(self) -> None:
        """Every module keys.py imports (for its types) never imports keys.py, directly or through others."""
        graph: dict[str, set[str]] = {name: set() for name in modules()}
        for edge in edges():
            graph[edge.importer].add(edge.imported)
        offenders = []
        for edge in edges():
            if edge.importer == "gateway.keys":
                chain = path_between(graph, edge.imported, "gateway.keys")
                if chain is not None:
                    offenders.append(f"{edge}, which imports keys.py back: {' -> '.join(chain)}; "
                                     "move the type to a module that never imports keys.py")

        assert [] == offenders

    def test_gate_never_imports_web(self) -> None:
        """The gate decides; pages render: nothing in gate/ imports web/ (but for NOT_YET)."""
        offenders = [f"{edge}: the gate may not import web" for edge in edges()
                     if part(edge.importer) == "gate" and part(edge.imported) == "web" and not explained(edge)]

        assert [] == offenders

    def test_identity_never_imports_proxy(self) -> None:
        """Identity reads requests through its own Protocols: nothing in identity/ imports proxy/."""
        offenders = [f"{edge}: identity may not import the proxy" for edge in edges()
                     if part(edge.importer) == "identity" and part(edge.imported) == "proxy"]

        assert [] == offenders

    def test_leaves_import_no_other_part(self) -> None:
        """keys (at run time), errors, metrics and logging import no gateway module; config imports only itself and those."""
        offenders = []
        for edge in edges():
            source, target = part(edge.importer), part(edge.imported)
            if source in {"keys", "errors", "metrics", "logging"} and run_time(edge) and target != "gateway":
                offenders.append(f"{edge}: `{source}` is a leaf and imports no other part of gateway")
            elif source == "config" and target not in {"config", "errors", "metrics", "logging", "gateway"}:
                offenders.append(f"{edge}: config imports only config and the leaves")

        assert [] == offenders

    def test_serve_knows_no_url_paths(self) -> None:
        """serve/ (processes, sockets, workers) names no Gatehouse URL path: it learns of writes through change hooks."""
        offenders = [
            f"{path.relative_to(ROOT)}:{line} names `{text[:40]}`: serve/ knows no URL paths"
            for path in sorted((ROOT / "gateway" / "serve").rglob("*.py"))
            for line, text in string_constants(path)
            if text.startswith(URL_PREFIXES)
        ]

        assert [] == offenders

    def test_every_exception_is_still_needed(self) -> None:
        """Each NOT_YET entry still matches an import; once it does not, delete it (the list only shrinks)."""
        stale = [
            f"{importer} no longer imports {imported}: delete this NOT_YET entry"
            for importer, imported, _why in NOT_YET
            if not any((e.importer == importer or e.importer.startswith(importer + "."))
                       and (e.imported == imported or e.imported.startswith(imported + ".")) for e in edges())
        ]

        assert [] == stale


def string_constants(path: Path) -> Iterator[tuple[int, str]]:
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            yield node.lineno, node.value


def find_cycles(graph: dict[str, list[Edge]]) -> list[list[Edge]]:
    """One cycle (as its edges) per strongly connected component of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for edge in graph[node]:
            if edge.imported not in index:
                visit(edge.imported)
                low[node] = min(low[node], low[edge.imported])
            elif edge.imported in on_stack:
                low[node] = min(low[node], index[edge.imported])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(component)

    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 10 * len(graph)))
    try:
        for node in sorted(graph):
            if node not in index:
                visit(node)
    finally:
        sys.setrecursionlimit(limit)
    cycles = []
    for component in components:
        start = min(component)
        targets = {name: [e for e in graph[name] if e.imported in component] for name in component}
        chain = path_between({k: {e.imported for e in v} for k, v in targets.items()}, targets[start][0].imported, start)
        route = [start, *(chain or [])]
        cycles.append([next(e for e in graph[a] if e.imported == b) for a, b in zip(route, route[1:])])
    return cycles


def path_between(graph: dict[str, set[str]], source: str, target: str) -> list[str] | None:
    """The modules from ``source`` to ``target`` along imports (breadth first), or None."""
    previous: dict[str, str | None] = {source: None}
    queue = [source]
    while queue:
        node = queue.pop(0)
        if node == target:
            chain = [node]
            while previous[chain[-1]] is not None:
                chain.append(previous[chain[-1]])  # type: ignore[arg-type]
            return chain[::-1]
        for following in sorted(graph.get(node, ())):
            if following not in previous:
                previous[following] = node
                queue.append(following)
    return None


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
