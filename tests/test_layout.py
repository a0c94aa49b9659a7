"""The package layout's rules, checked statically (DESIGN.md, "Layout"; issue 11).

- Imports go one way: no cycle among the modules of `mmrl` and `data_builders`, counting imports made inside
  functions (which is where cycles used to hide).
- Modules import each other at the top: a function-local import of a project module is refused (only optional heavy
  third-party dependencies are imported inside functions).
- The product never imports `mmrl.testing` (tiny models for the product live in `mmrl.models.tiny`, which
  `mmrl tiny-model` and `model.tiny_family` use; `mmrl.testing` holds pytest helpers).
- No module is over 400 lines.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("mmrl", "data_builders")
MAX_LINES = 400


def _modules() -> dict[str, Path]:
    out = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


MODULES = _modules()


def _imports(path: Path) -> list[tuple[str, bool]]:
    """(imported project module, inside a function?) for every import statement of the file."""
    tree = ast.parse(path.read_text())
    local_nodes = {
        id(n)
        for f in ast.walk(tree)
        if isinstance(f, ast.FunctionDef | ast.AsyncFunctionDef)
        for n in ast.walk(f)
        if isinstance(n, ast.Import | ast.ImportFrom)
    }
    found = []
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from pkg import mod` imports the module pkg.mod when there is one, else a name of pkg
            names = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in MODULES else node.module
                     for a in node.names]  # fmt: skip
        for name in names:
            if name.split(".")[0] in PACKAGES and name in MODULES:
                found.append((name, id(node) in local_nodes))
    return found


GRAPH = {name: {target for target, _ in _imports(path) if target != name} for name, path in MODULES.items()}


def _cycles() -> list[list[str]]:
    """Every strongly connected component of more than one module (Tarjan), sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in GRAPH[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(GRAPH):
        if v not in index:
            visit(v)
    return out


def test_the_graph_is_read():
    # the check sees real edges, so it can fail: the loop imports its phases, the update the one log-prob function
    assert {"mmrl.rl.groups", "mmrl.rl.update", "mmrl.rl.run"} <= GRAPH["mmrl.rl.loop"]
    assert "mmrl.models.logprobs" in GRAPH["mmrl.rl.update"]
    # and a cycle is found when there is one
    GRAPH["mmrl.models.logprobs"].add("mmrl.rl.update")
    try:
        assert ["mmrl.models.logprobs", "mmrl.rl.update"] in _cycles()
    finally:
        GRAPH["mmrl.models.logprobs"].discard("mmrl.rl.update")


def test_no_import_cycles():
    assert _cycles() == []


def test_no_function_local_project_imports():
    offenders = [
        f"{name} imports {target} inside a function"
        for name, path in MODULES.items()
        for target, local in _imports(path)
        if local
    ]
    assert offenders == []


def test_product_never_imports_testing():
    offenders = [f"{name} -> {t}" for name, targets in GRAPH.items() if not name.startswith("mmrl.testing")
                 for t in targets if t.startswith("mmrl.testing")]  # fmt: skip
    assert offenders == []


def test_modules_stay_small():
    long = {name: n for name, path in MODULES.items() if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert long == {}
