"""The import structure of `bebert_cli`: every module imports on its own, and no two modules import
each other, directly or around a circle.

Lazy imports inside functions count as edges too: they only hide a circle until the day someone moves
one to the top of a file. `from bebert_cli.x import y` is an edge to `bebert_cli.x.y` when that is a
module, else to `bebert_cli.x`. Importing `bebert_cli.a.b` also runs `bebert_cli/a/__init__.py` first;
that implicit edge is not counted (every module would depend on every package above it), only the
imports a file writes. A compiled extension (`bebert_cli._kernels`) imports nothing of bebert_cli.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

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


def upward_imports(graph: dict[str, set[str]], top: str) -> dict[str, set[str]]:
    """{module outside package `top`: the modules of `top` it imports}."""
    inside = lambda m: m == top or m.startswith(top + ".")  # noqa: E731
    return {name: {t for t in targets if inside(t)} for name, targets in graph.items()
            if not inside(name) and any(inside(t) for t in targets)}


def test_the_layering_check_sees_an_upward_import():
    graph = {"bebert_cli.cli.main": {"bebert_cli.training"}, "bebert_cli.training": {"bebert_cli.cli.output"},
             "bebert_cli.progress": set()}
    assert upward_imports(graph, "bebert_cli.cli") == {"bebert_cli.training": {"bebert_cli.cli.output"}}


def test_nothing_below_the_commands_imports_the_cli():
    """`bebert_cli.cli` is the top layer: the library (training loop, workflows, formats) serves it and must
    work without it, so only `bebert_cli/cli/` itself and the `python -m bebert_cli` entry point import it."""
    graph = {name: imports_of(name) for name in MODULES}
    entry_points = {f"{PACKAGE}.__main__"}
    upward = {k: v for k, v in upward_imports(graph, f"{PACKAGE}.cli").items() if k not in entry_points}
    assert upward == {}, f"imports of bebert_cli.cli from below it: {upward}"


_ISOLATED_IMPORTS = """
import importlib, json, sys, traceback
import torch, transformers  # noqa: F401 - third-party libraries may stay loaded; bebert_cli may not
failures = {}
for name in sys.argv[1:]:
    for loaded in [m for m in sys.modules if m == "bebert_cli" or m.startswith("bebert_cli.")]:
        del sys.modules[loaded]
    try:
        importlib.import_module(name)
    except BaseException:
        failures[name] = traceback.format_exc(limit=-3)
print(json.dumps(failures))
"""


def test_every_module_imports_on_its_own():
    """Each module imported with no bebert_cli module loaded before it (one interpreter, `sys.modules`
    cleared of bebert_cli between imports): nothing it needs may come from an import someone else did first."""
    import json

    proc = subprocess.run([sys.executable, "-c", _ISOLATED_IMPORTS, *sorted(MODULES)], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    failures = json.loads(proc.stdout.strip().splitlines()[-1])
    assert failures == {}, "\n".join(f"{k}:\n{v}" for k, v in failures.items())


def test_the_isolated_import_check_sees_a_broken_module(tmp_path):
    """The check itself: a module that only works after another was imported is reported."""
    import json

    pkg = tmp_path / "bebert_cli"  # a throwaway package of the same name, first on the path of that interpreter
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "needs_other.py").write_text("import sys\nsys.modules['bebert_cli.sub.other'].VALUE\n")
    (pkg / "sub" / "other.py").write_text("VALUE = 1\n")
    proc = subprocess.run([sys.executable, "-c", _ISOLATED_IMPORTS, "bebert_cli.sub.other", "bebert_cli.sub.needs_other"],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(tmp_path)})
    failures = json.loads(proc.stdout.strip().splitlines()[-1])
    assert list(failures) == ["bebert_cli.sub.needs_other"]
