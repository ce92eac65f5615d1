"""Errors name parameters: a Python caller reads ``ckpt_path``, the command line ``--ckpt_path``."""

from __future__ import annotations

import ast
import dataclasses
import pickle
import re
from pathlib import Path

import pytest

import iqeclip
from iqeclip.cli.main import main
from iqeclip.errors import UserError, as_flag, param
from iqeclip.model.detector import IQEClip

SRC = Path(iqeclip.__file__).parent
SPEAKS_IN_FLAGS = ("cli",)
"""The command line itself speaks in flags; every other part of the package names parameters."""
FLAG = re.compile(r"--[a-z][a-z0-9_]*")


def _cli(exc: UserError) -> str:
    return exc.render(lambda name: f"--{name}")


def test_a_marked_parameter_reads_as_python_and_as_the_command_line():
    exc = UserError(f"{param('ckpt_path')} x.pth:\n  no such file")
    assert str(exc) == "ckpt_path x.pth: no such file"
    assert _cli(exc) == "--ckpt_path x.pth: no such file"
    assert repr(exc) == "UserError('ckpt_path x.pth: no such file')"
    again = pickle.loads(pickle.dumps(exc))  # a worker process's error keeps its marks
    assert _cli(again) == "--ckpt_path x.pth: no such file"


def test_an_error_built_from_another_keeps_its_marks():
    inner = UserError(f"{param('img_size')} must be at least 8, got 4")
    outer = UserError(f"x.pth: its stored model configuration is invalid: {inner.message}")
    assert (
        str(outer)
        == "x.pth: its stored model configuration is invalid: img_size must be at least 8, got 4"
    )
    assert _cli(outer).endswith("invalid: --img_size must be at least 8, got 4")


def test_a_missing_checkpoint_names_ckpt_path_in_python_and_the_flag_on_the_command_line(
    tmp_path, monkeypatch, capsys
):
    missing = tmp_path / "missing.pth"
    with pytest.raises(UserError) as caught:
        IQEClip.from_checkpoint(missing)
    assert str(caught.value) == f"ckpt_path {missing}: no such file"
    monkeypatch.chdir(tmp_path)  # the run's log folder
    assert main(["test-zero", "--ckpt_path", str(missing)]) == 2
    assert capsys.readouterr().err == f"error: --ckpt_path {missing}: no such file\n"


def test_an_option_with_its_own_flag_is_rendered_with_it(capsys):
    """The command line maps a parameter to the flag its option declares (``normal_dir`` is
    ``--normal``): bounds are checked with the field's name."""
    from iqeclip.cli import options
    from iqeclip.cli.main import COMMANDS

    sections = COMMANDS["train-few"].sections
    assert options.flag("normal_dir", sections) == "--normal"
    assert options.flag("report_dir", sections) == "--report"
    assert options.flag("batch_size", sections) == "--batch_size"
    assert main(["train-few", "--batch_size", "0", "--print_config"]) == 2
    assert capsys.readouterr().err == "error: --batch_size must be at least 1, got 0\n"


def _flags_in_errors(path: Path) -> list[str]:
    """``file:line: text`` of each string in ``raise UserError(...)`` that holds a ``--flag``,
    and of each string that is a flag alone (an argument naming one for a message)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        strings: list[ast.Constant] = []
        if isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call):
            func = node.exc.func
            if getattr(func, "id", getattr(func, "attr", None)) == "UserError":
                strings = [n for n in ast.walk(node.exc) if isinstance(n, ast.Constant)]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            strings = [node] if FLAG.fullmatch(node.value) else []
        found += [
            f"{path.relative_to(path.parents[1])}:{s.lineno}: {s.value!r}"
            for s in strings
            if isinstance(s.value, str) and FLAG.search(s.value)
        ]
    return found


def test_the_package_raises_errors_without_flags():
    files = [
        p for p in sorted(SRC.rglob("*.py")) if p.relative_to(SRC).parts[0] not in SPEAKS_IN_FLAGS
    ]
    assert {p.relative_to(SRC).parts[0] for p in files} >= {"data", "engine", "inference", "serve"}
    assert [hit for path in files for hit in _flags_in_errors(path)] == []


def test_the_flag_finder_finds_flags(tmp_path):
    """The guard above can fail: it sees a flag in an error and a flag passed as an argument."""
    code = tmp_path / "pkg" / "mod.py"
    code.parent.mkdir()
    code.write_text(
        "raise UserError(f'--out {out}: no such folder')\n"
        "raise errors.UserError('give ' '--ckpt_path')\n"
        "check_writable('--out', out)\n"
        "raise UserError(f'{param(\"out\")} {out}: no such folder')\n"
        "log('use --resume')\n"
    )
    assert [hit.split(": ")[0] for hit in _flags_in_errors(code)] == [
        "pkg/mod.py:1",
        "pkg/mod.py:2",
        "pkg/mod.py:3",
    ]


@pytest.mark.parametrize("command", ["predict", "serve"])
def test_as_flag_writes_a_parameter_as_the_command_line_does(command):
    """What predict writes for a person (skipped_inputs.csv) and the server's answers render
    parameters with :func:`as_flag`: the flag the command line gives each of their options."""
    from iqeclip.cli import options
    from iqeclip.cli.main import COMMANDS

    sections = COMMANDS[command].sections
    names = [f.name for s in sections for f in dataclasses.fields(s.cls)]
    assert "max_slices" in names and "ckpt_path" in names
    assert [as_flag(n) for n in names] == [options.flag(n, sections) for n in names]


def test_a_skipped_input_keeps_the_flag_in_its_reason(tmp_path):
    """A skipped input's reason is file text (skipped_inputs.csv): it names ``--masks`` as it
    always has, while the error a Python caller gets under ``error`` names ``masks``."""
    from PIL import Image

    from iqeclip.inference.listing import check_inputs

    image, masks = tmp_path / "a.png", tmp_path / "masks"
    Image.new("L", (16, 16)).save(image)
    masks.mkdir()
    _, skipped = check_inputs([image], masks, 16, "skip")
    assert [s.reason for s in skipped] == [f"no mask a.png in --masks {masks}"]
    with pytest.raises(UserError) as caught:
        check_inputs([image], masks, 16, "error")
    said = f"{image}: no mask a.png in masks {masks} (on_bad_input skip leaves such inputs out)"
    assert str(caught.value) == said
    assert _cli(caught.value) == (
        f"{image}: no mask a.png in --masks {masks} (--on_bad_input skip leaves such inputs out)"
    )
