"""bft's own import graph, read from the source with `ast` (nothing is imported or run).

`tests/test_layers.py` checks the floor rules against it; `benchmarks/architecture.py` prints its figures.
Modules are named as installed (`bft.generation.run.engine` for `generation/run/engine.py`).
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FOLDERS = ("cards", "generation", "builders", "training", "viewer")  # bottom to top
# The commands: arguments, `run` and printing. Only `generation/cli.py` names them (in its table).
COMMANDS = {
    "bft.generation.generate",
    "bft.generation.cache",
    "bft.builders.seed",
    "bft.builders.build",
    "bft.builders.release",
    "bft.training.train",
    "bft.training.serve",
    "bft.training.evaluate",
    "bft.viewer.command",
}
CLI = "bft.generation.cli"
# The ground floor: record types, errors, text measures, the output folder's layout, rejection reasons.
GROUND = {
    "bft.generation.errors",
    "bft.generation.records",
    "bft.generation.text",
    "bft.generation.layout",
    "bft.generation.reasons",
}
# generation's rooms, bottom up; rooms on one level do not import each other.
ROOM_LEVELS = {"ground": 0, "config": 1, "endpoints": 2, "method": 2, "corpus": 3, "run": 4, "command": 5}


@dataclass
class Import:
    importer: str
    imported: str
    line: int
    at_top: bool  # in the module body (not inside a function or class)


@dataclass
class Module:
    name: str
    path: Path
    imports: list[Import] = field(default_factory=list)
    functions: list[tuple[str, int]] = field(default_factory=list)  # (qualified name, lines)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return "bft." + ".".join(parts)


def read_modules() -> dict[str, Module]:
    """Every module of the bft package, with its imports of bft modules and its functions' lengths."""
    paths = sorted(p for folder in FOLDERS for p in (REPO / folder).rglob("*.py"))
    modules = {module_name(p): Module(module_name(p), p) for p in paths}
    for module in modules.values():
        tree = ast.parse(module.path.read_text(encoding="utf-8"))
        _walk(tree, module, modules, inside=None)
    return modules


def _walk(node: ast.AST, module: Module, modules: dict[str, Module], inside: str | None) -> None:
    for child in ast.iter_child_nodes(node):
        if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
            name = f"{inside}.{child.name}" if inside else child.name
            module.functions.append((name, child.end_lineno - child.lineno + 1))
            _walk(child, module, modules, name)
        elif isinstance(child, ast.ClassDef):
            _walk(child, module, modules, f"{inside}.{child.name}" if inside else child.name)
        elif isinstance(child, (ast.Import, ast.ImportFrom)):
            for target in _targets(child, modules):
                module.imports.append(Import(module.name, target, child.lineno, inside is None))
        else:
            _walk(child, module, modules, inside)


def _targets(node: ast.Import | ast.ImportFrom, modules: dict[str, Module]) -> list[str]:
    """The bft modules an import statement loads (`from bft.x import y` is bft.x.y when y is a module)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name in modules]
    if not node.module or not node.module.startswith("bft.") or node.level:
        return []
    found = [f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in modules]
    return found if len(found) == len(node.names) else [node.module, *found]


def folder_of(name: str) -> str:
    return name.split(".")[1]


def room_of(name: str) -> str:
    """generation's room of a module: ground, config, endpoints, method, corpus, run or command."""
    if name in GROUND:
        return "ground"
    if name in COMMANDS or name == CLI or name == "bft.generation":
        return "command"
    parts = name.split(".")
    if len(parts) > 3:
        return parts[2]
    return "config"  # bft.generation.config


def level(name: str) -> tuple[int, int]:
    """Where a module stands: its folder's floor, then (in generation) its room's, then commands on top."""
    folder = FOLDERS.index(folder_of(name))
    if folder_of(name) == "generation":
        return folder, ROOM_LEVELS[room_of(name)]
    return folder, ROOM_LEVELS["command"] if name in COMMANDS else 0


def arrows(modules: dict[str, Module]) -> set[tuple[str, str]]:
    return {(i.importer, i.imported) for m in modules.values() for i in m.imports if i.imported != m.name}


def cycles(modules: dict[str, Module]) -> list[list[str]]:
    """The import circles: strongly connected components of more than one module (Tarjan)."""
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for importer, imported in arrows(modules):
        graph[importer].add(imported)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                item = stack.pop()
                on_stack.discard(item)
                component.append(item)
                if item == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for name in sorted(graph):
        if name not in index:
            visit(name)
    return found


def upward(modules: dict[str, Module]) -> list[tuple[str, str]]:
    """Imports of a module that stands higher, or in a side room on the same level of generation."""
    wrong = []
    for importer, imported in sorted(arrows(modules)):
        a, b = level(importer), level(imported)
        side_room = (
            a == b
            and folder_of(importer) == folder_of(imported) == "generation"
            and room_of(importer) != room_of(imported)
        )
        if b > a or side_room:
            wrong.append((importer, imported))
    return wrong


def depth(modules: dict[str, Module]) -> int:
    """Levels of the import graph: the longest chain of imports, counted in modules."""
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for importer, imported in arrows(modules):
        graph[importer].add(imported)
    memo: dict[str, int] = {}

    def longest(node: str, seen: frozenset) -> int:
        if node in memo:
            return memo[node]
        result = 1 + max((longest(n, seen | {n}) for n in graph[node] if n not in seen), default=0)
        memo[node] = result
        return result

    return max(longest(name, frozenset({name})) for name in graph)


def lines_of_code(modules: dict[str, Module]) -> int:
    return sum(len(m.path.read_text(encoding="utf-8").splitlines()) for m in modules.values())
