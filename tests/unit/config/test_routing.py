"""Options carry their routing: which commands take an option, and whether ``--resume`` holds it
fixed, are declared on the option; the command line, ``--config`` files, the resolved record and
the resumed run's check are all derived from the declaration.

The measure: adding an option of an existing section is one edit, in the config class. The
throwaway option below lives only in this file's subclass of :class:`RunConfig`, and reaches
every consumer with no other file touched.
"""

from __future__ import annotations

import argparse
import dataclasses
import types

import pytest
import torch
import yaml

from iqeclip.cli.main import COMMANDS, build_parser, main
from iqeclip.config import ARCHITECTURE_FIELDS, ModelConfig, Option, RunConfig, resume_fixed
from iqeclip.engine.resume import load_state, save_state
from iqeclip.errors import UserError

DECLARED = ("train-few", "test-few")
Throwaway = dataclasses.make_dataclass(
    "RunConfig",
    [
        (
            "throwaway",
            "int",
            Option("a throwaway option", minimum=0, commands=DECLARED, fixed_on_resume=True)(3),
        )
    ],
    bases=(RunConfig,),
)


@pytest.fixture
def with_throwaway(monkeypatch):
    """Every command's ``run`` section reads :data:`Throwaway` instead of :class:`RunConfig`."""
    for name, command in COMMANDS.items():
        sections = tuple(
            dataclasses.replace(s, cls=Throwaway) if s.cls is RunConfig else s
            for s in command.sections
        )
        monkeypatch.setitem(COMMANDS, name, dataclasses.replace(command, sections=sections))


def _commands_with(flag: str) -> set[str]:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return {
        name
        for name, sub in action.choices.items()
        if any(flag in a.option_strings for a in sub._actions)
    }


def test_a_new_option_reaches_exactly_the_commands_it_declares(with_throwaway, capsys):
    assert _commands_with("--throwaway") == set(DECLARED)
    with pytest.raises(SystemExit):
        main(["train-few", "--help"])
    assert "a throwaway option (default 3)" in " ".join(capsys.readouterr().out.split())
    with pytest.raises(SystemExit) as refused:
        main(["train-zero", "--throwaway", "5"])
    assert refused.value.code == 2


def test_a_new_option_reaches_the_config_file_and_the_record(
    with_throwaway, monkeypatch, tmp_path, capsys
):
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({"run": {"throwaway": 7}}))
    assert main(["train-few", "--config", str(config), "--print_config"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["run"]["throwaway"] == 7

    seen = {}

    def run(command, values):
        seen["run"] = values["run"]
        return tmp_path

    monkeypatch.setitem(COMMANDS, "test-few", dataclasses.replace(COMMANDS["test-few"], run=run))
    argv = ["test-few", "--ckpt_path", "x.pth", "--config", str(config), "--throwaway", "9"]
    assert main(argv) == 0
    assert seen["run"]["throwaway"] == 9  # the command line wins over the file
    record = yaml.safe_load((tmp_path / "config.yaml").read_text())
    assert record["command"] == "test-few" and record["run"]["throwaway"] == 9


def test_a_new_option_is_checked_and_named_as_each_caller_says_it(with_throwaway, capsys):
    with pytest.raises(UserError, match=r"^throwaway must be at least 0, got -1$"):
        Throwaway(throwaway=-1)
    assert main(["train-few", "--throwaway", "-1", "--print_config"]) == 2
    assert capsys.readouterr().err == "error: --throwaway must be at least 0, got -1\n"


def test_a_new_option_declared_fixed_reaches_the_resume_check(tmp_path):
    from iqeclip.engine.trainer import Trainer

    assert "throwaway" in resume_fixed(Throwaway)
    assert "throwaway" not in resume_fixed(RunConfig)

    def settings(run):  # what the trainer stores and compares on --resume
        fake = types.SimpleNamespace(run=run, model=types.SimpleNamespace(config=ModelConfig()))
        return Trainer.settings(fake)

    head = torch.nn.Linear(2, 2)
    optimizer = torch.optim.Adam(head.parameters())
    path = tmp_path / "Brain.resume"
    saved = settings(Throwaway(throwaway=3))
    assert saved["throwaway"] == 3
    save_state(path, head, optimizer, epoch=0, step=1, best=0.0, best_state=None, settings=saved)
    assert load_state(path, head, optimizer, saved)["step"] == 1
    with pytest.raises(UserError, match=r"belongs to another run \(throwaway=3\)"):
        load_state(path, head, optimizer, settings(Throwaway(throwaway=4)))


def test_the_derived_routing_is_the_published_one():
    """The sets the hand-kept tuples held before the routing moved onto the options."""
    run = {
        name: {f.name for f in _fields(name)}
        for name in ("train-zero", "train-few", "test-zero", "test-few", "reproduce")
    }
    common = {"obj", "data_path", "batch_size", "seed", "device", "workers", "log_path"}
    common |= {"metrics_json", "overwrite", "on_bad_input", "cache_dir", "cache_dtype"}
    common |= {"cache_budget_gb", "report_dir", "manifest", "min_lesion_px", "margin", "window"}
    common |= {"percentile", "axis", "orientation", "layout", "label_values"}
    train = {"epochs", "learning_rate", "save_dir", "select", "resume", "save_every"}
    few = {"shot", "iterate", "fewshot_seed_dir"}
    own = {"normal_dir", "abnormal_dir", "masks_dir"}
    assert run["train-zero"] == common | train
    assert run["train-few"] == common | train | few | own
    assert run["test-zero"] == common | {"ckpt_path"}
    assert run["test-few"] == common | few | {"ckpt_path"}
    assert run["reproduce"] == {
        *("data_path", "layout", "batch_size", "seed", "device", "workers", "on_bad_input"),
        "cache_dir",
        *("cache_dtype", "cache_budget_gb", "fewshot_seed_dir", "epochs", "learning_rate"),
        *("select", "save_every"),
    }
    assert set(resume_fixed(RunConfig)) == {
        *("obj", "setting", "shot", "iterate", "batch_size", "seed", "learning_rate", "select"),
        *("epochs", "normal_dir", "abnormal_dir", "masks_dir", "manifest", "min_lesion_px"),
        *("margin", "window", "percentile", "axis", "orientation", "label_values"),
    }
    assert (
        *("model_name", "img_size", "features_list", "prompt_len", "deep_prompt_len"),
        *("total_d_layer_len", "use_global", "quick_gelu", "normalize", "iqm_layers"),
        "iqm_heads",
    ) == ARCHITECTURE_FIELDS


def _fields(command: str) -> list[dataclasses.Field]:
    section = next(s for s in COMMANDS[command].sections if s.name == "run")
    return section.fields(command)
