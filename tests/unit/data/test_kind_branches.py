"""No module outside ``data/readers/`` branches on a file kind: what a format does is its
reader's answer (:func:`~iqeclip.data.readers.reader_for`), never a comparison of a kind name.

Counted on the AST of every module of the package outside ``data/readers/``: a call of a
function named ``kind``, a comparison with a reader's name (``"image"``, ``"dicom"``,
``"series"``, ``"nifti"``, alone or in a tuple, list or set), and an ``isinstance`` check
against a built-in reader class.
"""

from __future__ import annotations

import ast
from pathlib import Path

import iqeclip
from iqeclip.data.readers import DicomReader, ImageReader, NiftiReader, SeriesReader

SRC = Path(iqeclip.__file__).parent
READERS = SRC / "data" / "readers"
KINDS = frozenset(r.name for r in (ImageReader, DicomReader, SeriesReader, NiftiReader))
CLASSES = frozenset(r.__name__ for r in (ImageReader, DicomReader, SeriesReader, NiftiReader))


def _names(node: ast.AST) -> set[str]:
    """The string constants a comparison operand stands for (a tuple, list or set of them)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return {node.value}
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return set().union(*(_names(e) for e in node.elts)) if node.elts else set()
    return set()


def _called(node: ast.Call) -> str | None:
    func = node.func
    return func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)


def kind_branches(source: str) -> list[int]:
    """The lines of ``source`` that branch on a file kind (see the module docstring)."""
    lines: set[int] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Compare):
            if any(_names(side) & KINDS for side in [node.left, *node.comparators]):
                lines.add(node.lineno)
        elif isinstance(node, ast.Call) and _called(node) == "kind":
            lines.add(node.lineno)
        elif isinstance(node, ast.Call) and _called(node) == "isinstance" and len(node.args) == 2:
            classes = node.args[1]
            named = classes.elts if isinstance(classes, ast.Tuple) else [classes]
            if any(getattr(c, "id", getattr(c, "attr", None)) in CLASSES for c in named):
                lines.add(node.lineno)
    return sorted(lines)


def test_the_counter_finds_each_form_of_kind_branch():
    source = (
        'found = kind(path)\nif found == "series":\n    pass\n'
        'dicom = found in ("series", "dicom")\n'
        "plain = isinstance(reader, ImageReader)\n"
        'other = role == "mask" or name in ("a", "b")\n'
        'both = kind(path) == "image"\n'
    )
    assert kind_branches(source) == [1, 2, 4, 5, 7]


def test_no_module_outside_the_readers_branches_on_a_file_kind():
    found = {
        str(path.relative_to(SRC)): lines
        for path in sorted(SRC.rglob("*.py"))
        if not path.is_relative_to(READERS)
        and (lines := kind_branches(path.read_text(encoding="utf-8")))
    }
    assert found == {}
