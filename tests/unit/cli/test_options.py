"""The command line is derived from the config dataclasses: one declaration per option."""

from __future__ import annotations

import argparse
import dataclasses
import logging

import pytest

import iqeclip
from iqeclip import config
from iqeclip.cli.main import COMMANDS, build_parser, main
from iqeclip.config import option_of


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def _flags(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {s: a for a in parser._actions for s in a.option_strings}


def test_every_option_field_is_a_flag_of_some_command_in_both_spellings():
    parsers = _subparsers()
    for cls in (config.ModelConfig, config.RunConfig, config.PredictConfig, config.DemoConfig):
        for field in dataclasses.fields(cls):
            opt = option_of(field)
            if opt is None or opt.positional:
                continue
            name = opt.flag or field.name
            owners = [c for c, p in parsers.items() if f"--{name}" in _flags(p)]
            assert owners, f"{cls.__name__}.{field.name} is a flag of no command"
            for command in owners:
                flags = _flags(parsers[command])
                assert flags[f"--{name}"] is flags[f"--{name.replace('_', '-')}"]


def test_a_shared_option_has_one_help_text_everywhere():
    parsers = _subparsers()
    texts = {_flags(p)["--device"].help for p in parsers.values() if "--device" in _flags(p)}
    assert texts == {config.DEVICE.help + " (default auto)"}
    assert len([c for c, p in parsers.items() if "--device" in _flags(p)]) >= 6


def test_flags_default_to_not_given_so_config_files_can_fill_them():
    args = build_parser().parse_args(["train-zero"])
    assert not hasattr(args, "batch_size") and not hasattr(args, "model_name")


def test_required_options_are_checked_after_the_config_file(capsys):
    assert main(["test-zero"]) == 2
    assert capsys.readouterr().err == "error: --ckpt_path is required\n"


def test_version(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0
    assert capsys.readouterr().out == f"iqeclip {iqeclip.__version__}\n"


@pytest.mark.parametrize(
    ("flag", "level"), [("-q", logging.WARNING), ("-v", logging.DEBUG), (None, logging.INFO)]
)
def test_quiet_and_verbose_set_the_console_level(monkeypatch, flag, level):
    seen = {}

    def run(command, values):
        seen["level"] = logging.getLogger("iqeclip").level
        logging.getLogger("iqeclip.test").info("an info line")

    monkeypatch.setitem(COMMANDS, "info", dataclasses.replace(COMMANDS["info"], run=run))
    assert main(["info", *([flag] if flag else [])]) == 0
    assert seen["level"] == level


def test_library_log_lines_reach_the_console_through_the_cli(capsys, monkeypatch):
    def run(command, values):
        logging.getLogger("iqeclip.engine").info("Brain AUC : 0.5000")

    monkeypatch.setitem(COMMANDS, "info", dataclasses.replace(COMMANDS["info"], run=run))
    assert main(["info"]) == 0
    assert capsys.readouterr().out == "Brain AUC : 0.5000\n"
    assert main(["info", "-q"]) == 0
    assert capsys.readouterr().out == ""
