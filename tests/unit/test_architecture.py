"""The shape of the package: no import cycles, the model core stands alone, modules stay small,
and only the command line and the apps print."""

from __future__ import annotations

import ast
from pathlib import Path

import iqeclip

SRC = Path(iqeclip.__file__).parent
MAX_LINES = 500


def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in SRC.rglob("*.py")}


def _imports(path: Path, modules: dict[str, Path]) -> set[str]:
    """The package modules ``path`` imports, at any depth of the file (lazy imports count)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        else:
            continue
        found |= {n for n in names if n in modules}
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    graph = {}
    for name, path in modules.items():
        # importing a.b.c runs a/__init__ and a/b/__init__ too, unless the importer is inside
        # that package (then its __init__ is already running)
        graph[name] = {
            target
            for imported in _imports(path, modules)
            for target in [imported]
            + [".".join(imported.split(".")[:i]) for i in range(2, imported.count(".") + 1)]
            if target != name and target in modules and not name.startswith(target + ".")
        }
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_cycle_finder_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle_in_the_package():
    assert _cycle(_graph()) is None


def test_the_model_core_imports_nothing_above_it():
    above = ("iqeclip.engine", "iqeclip.inference", "iqeclip.cli", "iqeclip.apps", "iqeclip.report")
    graph = _graph()
    for name, imported in graph.items():
        if name.startswith("iqeclip.model"):
            bad = sorted(i for i in imported if i.startswith(above))
            assert not bad, f"{name} imports {bad}"


def test_the_report_runs_no_model():
    """A report draws from a run folder or a test's values: nothing of the model, the engine or
    inference is imported (a test's examples come with their maps)."""
    forbidden = ("iqeclip.model", "iqeclip.engine", "iqeclip.inference")
    for name, imported in _graph().items():
        if name.startswith("iqeclip.report"):
            bad = sorted(i for i in imported if i.startswith(forbidden))
            assert not bad, f"{name} imports {bad}"


def test_nothing_imports_the_command_line():
    for name, imported in _graph().items():
        if not name.startswith("iqeclip.cli") and name != "iqeclip.__main__":
            assert not any(i.startswith("iqeclip.cli") for i in imported), name


def test_modules_stay_small():
    sizes = {
        name: len(p.read_text(encoding="utf-8").splitlines()) for name, p in _modules().items()
    }
    assert {n: s for n, s in sizes.items() if s > MAX_LINES} == {}


def test_only_the_command_line_and_the_apps_print():
    for name, path in _modules().items():
        if name.startswith(("iqeclip.cli", "iqeclip.apps")):
            continue
        calls = [
            node.lineno
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "print"
        ]
        assert not calls, f"{name} prints at lines {calls}; use logging"
