"""The declared layer order of the packages, held on the AST import graph (lazy imports count):
no package imports one above it, so data flows one way (file -> reader -> model -> predictions
-> writers) and every package can be read knowing only the ones below it."""

from __future__ import annotations

import ast

from tests.unit.test_architecture import SRC, _graph

LAYERS = (
    ("errors", "config", "runtime"),
    ("metrics", "model", "data"),
    ("engine",),
    ("inference", "report"),
    ("apps", "serve", "reproduce"),
    ("cli",),
)
"""Bottom first; packages of one layer may import each other (without a cycle)."""


def _layer(module: str) -> int | None:
    parts = module.split(".")
    if len(parts) < 2:  # the package itself: its public names are imported lazily, by name
        return None
    for level, packages in enumerate(LAYERS):
        if parts[1] in packages:
            return level
    return None


def test_every_package_has_a_layer():
    packages = {p.name for p in SRC.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    modules = {p.stem for p in SRC.glob("*.py")} - {"__init__", "__main__"}
    assert packages | modules == {name for layer in LAYERS for name in layer}


def test_no_package_imports_one_above_it():
    upward = []
    for name, imported in _graph().items():
        mine = _layer(name)
        if mine is None:
            continue
        upward += [f"{name} -> {i}" for i in imported if (_layer(i) or 0) > mine]
    assert upward == []


def test_the_package_root_imports_only_config_eagerly():
    """``import iqeclip`` stays light: its other names are imported on first use."""
    tree = ast.parse((SRC / "__init__.py").read_text(encoding="utf-8"))
    eager = {
        node.module
        for node in tree.body
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("iqeclip")
    }
    assert eager == {"iqeclip.config"}


def test_an_upward_import_is_found():
    assert _layer("iqeclip.engine.trainer") < _layer("iqeclip.report.run")
    assert _layer("iqeclip.model.detector") < _layer("iqeclip.engine.stream")
    assert _layer("iqeclip.cli.main") == len(LAYERS) - 1


MAX_FUNCTION_LINES = 80


def test_no_function_over_80_lines():
    long = []
    for path in SRC.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(SRC)}:{node.lineno} {node.name} ({lines})")
    assert long == []


def test_one_batched_forward_loop():
    """Scoring a batch is engine/stream.py's (serve's ``Locked`` only wraps a detector in a
    lock); the apps time ``predict`` on tensors they made, and the model calls itself."""
    callers = set()
    for path in SRC.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in ("predict", "predict_features")
            ):
                callers.add(str(path.relative_to(SRC)))
    assert callers == {
        "engine/stream.py",
        "serve/jobs.py",
        "model/detector.py",
        "apps/benchmark.py",
        "apps/breakdown.py",
    }
