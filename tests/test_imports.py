"""The import structure of `bebert_cli`: every module imports on its own, and no two modules import
each other, directly or around a circle.

Lazy imports inside functions count as edges too: they only hide a circle until the day someone moves
one to the top of a file. `from bebert_cli.x import y` is an edge to `bebert_cli.x.y` when that is a
module, else to `bebert_cli.x`; importing a module also runs its packages' `__init__`, so a package's
`__init__` is an edge only where it is named (that is what Python runs first anyway, and counting it
would make every `from bebert_cli.quant.layers import ...` depend on `bebert_cli.__init__`).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import bebert_cli

ROOT = Path(bebert_cli.__file__).parent
PACKAGE = "bebert_cli"


def _modules() -> dict[str, Path]:
    out = {}
    for f in sorted(ROOT.rglob("*.py")):
        rel = f.relative_to(ROOT).as_posix()
        parts = [PACKAGE, *rel[:-3].split("/")]
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = f
    return out


MODULES = _modules()
# Compiled extensions (`bebert_cli._kernels`): modules too, that import nothing of bebert_cli.
EXTENSIONS = {f"{PACKAGE}.{f.name.split('.')[0]}" for f in ROOT.glob("*.so")} | {f"{PACKAGE}._kernels"}


def _resolve(module: str, level: int, current: str, is_package: bool) -> str:
    if not level:
        return module
    base = current.split(".")
    base = base if is_package else base[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join(base + ([module] if module else []))


def imports_of(name: str) -> set[str]:
    """The bebert_cli modules `name` imports anywhere in its source (top level or inside functions)."""
    path = MODULES[name]
    tree = ast.parse(path.read_text(), filename=str(path))
    is_package = path.name == "__init__.py"
    edges: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(node.module or "", node.level, name, is_package)
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES.keys() | EXTENSIONS else base for a in node.names]
        else:
            continue
        for t in targets:
            if t in EXTENSIONS:
                continue
            while t and t not in MODULES and "." in t:
                t = t.rpartition(".")[0]
            if t in MODULES and t != name:
                edges.add(t)
    return edges


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One circle of the graph as [a, b, ..., a], or None (iterative depth-first search)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    for start in sorted(graph):
        if state.get(start):
            continue
        path, stack = [start], [iter(sorted(graph[start]))]
        state[start] = 1
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                stack.pop()
            elif state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            elif not state.get(nxt):
                state[nxt] = 1
                path.append(nxt)
                stack.append(iter(sorted(graph.get(nxt, ()))))
    return None


def test_the_cycle_finder_finds_a_planted_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_the_import_graph_of_bebert_cli_has_no_cycle():
    graph = {name: imports_of(name) for name in MODULES}
    assert sum(map(len, graph.values())) > 50  # the walk sees the real imports
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


@pytest.mark.parametrize("name", sorted(MODULES))
def test_every_module_imports_on_its_own(name):
    """A fresh interpreter per module: nothing it needs may come from an import someone else did first."""
    proc = subprocess.run([sys.executable, "-c", f"import {name}"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"import {name} failed:\n{proc.stderr[-2000:]}"
