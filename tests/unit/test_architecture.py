"""The floor plan, checked: layers, no phase importing another, no import cycle, orderpipe
imports at module top, and the size of modules and functions.

A test over the AST import graph rather than import-linter: it counts imports inside functions
and under TYPE_CHECKING (import-linter's graph does too, but the size and start-up rules need
the AST anyway), and it adds no dependency. Each rule names what broke it.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "orderpipe"

# Top to bottom. A module may import its own package, and any package on a lower layer.
LAYERS: list[set[str]] = [
    {"cli"},
    {"runs"},
    {"report"},  # reads every phase's outputs; run-all (runs) renders it
    {"generate", "etl", "ingest", "stream", "eco"},  # the phases
    # A phase too (train, predict), and the scoring the stream's consumer runs with the same
    # saved Pipeline: the one phase another phase uses, so it sits below the others.
    {"ml"},
    {"table", "db"},
    {"core"},
]
# The package's own face: `orderpipe` (the version) and `python -m orderpipe`.
ROOTS = {"orderpipe", "orderpipe.__main__"}

# Third-party packages slow to import: an orderpipe module that imports one of these at its top
# may be imported lazily (inside a function), so that `orderpipe --help` and the commands that do
# not need it start fast. Any other orderpipe import sits at the top of its module.
HEAVY = {
    "aiokafka", "codecarbon", "deltalake", "joblib", "matplotlib", "numpy", "polars",
    "prometheus_client", "psycopg", "pyarrow", "pymysql", "pyspark", "sklearn", "sqlalchemy",
    "scipy", "typer", "rich", "pydantic", "pydantic_settings",
}  # fmt: skip

MAX_MODULE_LINES = 450
MAX_FUNCTION_LINES = 80
# Exceptions, each with its reason (the issue note repeats them).
LONG_MODULES: dict[str, str] = {}
LONG_FUNCTIONS: dict[str, str] = {}


@dataclass(frozen=True)
class Import:
    source: str  # the importing module
    target: str  # the orderpipe module imported
    line: int
    top: bool  # at the module's top level (or in a top-level if/try)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


@cache
def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


@cache
def tree(name: str) -> ast.Module:
    return ast.parse(modules()[name].read_text(encoding="utf-8"))


def _top_level_nodes(body: list[ast.stmt]) -> Iterator[ast.stmt]:
    for node in body:
        yield node
        if isinstance(node, ast.If | ast.Try):
            for block in (node.body, getattr(node, "orelse", []), getattr(node, "finalbody", [])):
                yield from _top_level_nodes(block)
            for handler in getattr(node, "handlers", []):
                yield from _top_level_nodes(handler.body)


def _resolve(dotted: str) -> str | None:
    """The orderpipe module a dotted name lands in (a module, or a name inside one)."""
    known = modules()
    while dotted and dotted not in known:
        dotted = dotted.rpartition(".")[0]
    return dotted or None


@cache
def imports() -> tuple[Import, ...]:
    found: list[Import] = []
    for name in modules():
        top = {id(node) for node in _top_level_nodes(tree(name).body)}
        for node in ast.walk(tree(name)):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [f"{node.module}.{alias.name}" for alias in node.names]
            for dotted in targets:
                if dotted.split(".")[0] != "orderpipe":
                    continue
                target = _resolve(dotted)
                if target and target != name:
                    found.append(Import(name, target, node.lineno, id(node) in top))
    return tuple(found)


def package(module: str) -> str:
    """`orderpipe.stream.consumer` -> `stream`; the root modules are their own."""
    return module if module in ROOTS else module.split(".")[1]


def layer(module: str) -> int:
    for depth, names in enumerate(LAYERS):
        if package(module) in names:
            return depth
    raise AssertionError(f"{module} is in no layer: add its package to LAYERS")


def test_every_module_sits_in_a_layer() -> None:
    for name in modules():
        if name not in ROOTS:
            layer(name)


def test_nothing_imports_upwards_and_no_phase_imports_another() -> None:
    wrong = [
        f"{i.source}:{i.line} imports {i.target}"
        for i in imports()
        if i.source not in ROOTS
        and i.target not in ROOTS
        and package(i.source) != package(i.target)
        and layer(i.target) <= layer(i.source)
    ]
    assert wrong == [], "imports against the layers:\n" + "\n".join(wrong)


def test_only_the_version_comes_from_the_package_root() -> None:
    wrong = []
    for name in modules():
        for node in ast.walk(tree(name)):
            if isinstance(node, ast.ImportFrom) and node.module == "orderpipe":
                names = {alias.name for alias in node.names}
                if names - {"__version__"}:
                    wrong.append(f"{name}:{node.lineno} imports {sorted(names)} from orderpipe")
    assert wrong == []


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(edges):
        if root in index:
            continue
        work = [(root, iter(sorted(edges[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
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
                    found.append(sorted(component))
    return found


def test_no_import_cycle_even_through_imports_inside_functions() -> None:
    edges: dict[str, set[str]] = {name: set() for name in modules()}
    for i in imports():
        edges[i.source].add(i.target)
    # A package's __init__ importing its own modules is its face, not a cycle.
    for name in modules():
        if modules()[name].name == "__init__.py":
            edges[name] = {t for t in edges[name] if not t.startswith(name + ".")}
    assert _cycles(edges) == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


@cache
def heavy_at_top(name: str) -> bool:
    """Whether importing this module imports a heavy third-party package (itself or through
    the orderpipe modules it imports at its top)."""
    for node in _top_level_nodes(tree(name).body):
        if isinstance(node, ast.Import):
            roots = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots = [node.module]
        else:
            continue
        if any(root.split(".")[0] in HEAVY for root in roots):
            return True
    return any(heavy_at_top(i.target) for i in imports() if i.source == name and i.top)


def test_orderpipe_imports_sit_at_module_top_unless_they_load_a_heavy_library() -> None:
    """The start-up rule (`orderpipe --help` in a blink) is the one reason to import an
    orderpipe module inside a function; hiding a cycle is not one."""
    lazy = [
        f"{i.source}:{i.line} imports {i.target} inside a function"
        for i in imports()
        if not i.top and not heavy_at_top(i.target)
    ]
    assert lazy == [], "\n".join(lazy)


def test_no_module_is_longer_than_its_limit() -> None:
    long = {
        name: lines
        for name, path in modules().items()
        if (lines := len(path.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES
        and name not in LONG_MODULES
    }
    assert long == {}


def _functions(name: str) -> Iterator[tuple[str, int]]:
    for node in ast.walk(tree(name)):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            yield f"{name}.{node.name}", node.end_lineno - node.lineno + 1  # type: ignore[operator]


def test_no_function_is_longer_than_its_limit() -> None:
    long = {
        function: lines
        for name in modules()
        for function, lines in _functions(name)
        if lines > MAX_FUNCTION_LINES and function not in LONG_FUNCTIONS
    }
    assert long == {}


@pytest.mark.parametrize("name", sorted(n for n, p in modules().items() if p.name == "__init__.py"))
def test_every_package_says_what_it_owns(name: str) -> None:
    doc = ast.get_docstring(tree(name)) or ""
    assert len(doc.split()) >= 8 and "TODO" not in doc, f"{name} has no docstring of its own"
