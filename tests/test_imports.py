"""The import graph of ``src/freqkit`` (every import of a freqkit module: function-local and type-only ones included) has no cycles."""

from __future__ import annotations

import ast
from pathlib import Path

import freqkit

SRC = Path(freqkit.__file__).resolve().parent


def _module_names() -> dict[str, Path]:
    out = {}
    for path in SRC.rglob("*.py"):
        parts = ("freqkit",) + path.relative_to(SRC).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """Freqkit modules that ``name`` imports anywhere: top level, inside functions and under ``if TYPE_CHECKING:``
    (a type-only import is still a dependency a reader follows)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def resolve(target: str) -> None:
        # `from a.b import c` imports module a.b.c when it is one, else the name c from a.b
        while target and target not in modules:
            target = target.rpartition(".")[0]
        if target.startswith("freqkit"):
            found.add(target)

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.Import):
            for alias in node.names:
                resolve(alias.name)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                resolve(f"{base}.{alias.name}")
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text(), str(path)))
    found.discard(name)
    return found


def import_graph() -> dict[str, set[str]]:
    """Module -> the freqkit modules it imports, without a package's ``__init__`` importing its own children."""
    modules = _module_names()
    graph = {}
    for name, path in modules.items():
        deps = _imports(name, path, modules)
        if path.name == "__init__.py":  # a package re-exporting its children is not a cycle with them
            deps = {d for d in deps if not d.startswith(name + ".")}
        graph[name] = deps
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def strong(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            strong(v)
    return sorted(out)


def test_cycle_finder_on_a_known_graph():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set(), "e": {"d", "f"}, "f": {"e"}}
    assert cycles(graph) == [["a", "b", "c"], ["e", "f"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_graph_sees_local_relative_and_package_imports(tmp_path):
    graph = import_graph()
    assert "freqkit.analysis.metrics" in graph["freqkit.analysis.report"]  # top-level `from ... import`
    assert "freqkit.analysis.html" in graph["freqkit.analysis.report"]  # function-local import
    assert "freqkit.analysis.report" not in graph["freqkit.analysis.plots"]  # the renderers take the report, never import it
    assert "freqkit.data.transforms" in graph["freqkit.data.folders"]  # under TYPE_CHECKING: counted too
    assert all(not d.startswith("freqkit.analysis.") for d in graph["freqkit.analysis"])


def test_no_import_cycles():
    graph = import_graph()
    found = cycles(graph)
    assert not found, "import cycles in src/freqkit: " + "; ".join(" <-> ".join(c) for c in found)
