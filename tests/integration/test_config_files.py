"""``--config`` and ``--print_config``: the resolved options of a run, fed back, give the same run."""

from __future__ import annotations

import json

import yaml
from safetensors.torch import load_file

from iqeclip.cli.main import main
from tests.integration.conftest import MODEL


def test_a_checkpoints_yaml_fed_back_reproduces_the_training(bench, tmp_path):
    first = tmp_path / "first"
    args = ["train-few", "--data_path", str(bench), *MODEL, "--shot", "2", "--epoch", "1"]
    args += ["--no_cache", "--log_path", str(first / "log")]
    assert main([*args, "--save_dir", str(first), "--metrics_json", str(first / "m.json")]) == 0
    record = yaml.safe_load((first / "Brain_2.yaml").read_text())
    assert record["run"]["shot"] == 2 and record["model"]["model_name"] == "iqe-tiny"

    again = tmp_path / "again"
    config = ["--config", str(first / "Brain_2.yaml"), "--save_dir", str(again)]
    config += ["--metrics_json", str(again / "m.json"), "--log_path", str(again / "log")]
    assert main(["train-few", *config]) == 0
    assert json.loads((again / "m.json").read_text()) == json.loads((first / "m.json").read_text())
    a, b = load_file(first / "Brain_2.pth"), load_file(again / "Brain_2.pth")
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)


def test_print_config_round_trips_and_flags_win(tmp_path, capsys):
    argv = ["train-zero", *MODEL, "--batch-size", "3", "--features_list", "[2,4]", "--no_cache"]
    assert main([*argv, "--print_config"]) == 0
    printed = capsys.readouterr().out
    record = yaml.safe_load(printed)
    assert record["command"] == "train-zero"
    assert record["run"]["batch_size"] == 3 and record["run"]["cache_dir"] is None
    assert record["model"]["features_list"] == [2, 4] and record["run"]["setting"] == "zero"
    path = tmp_path / "run.yaml"
    path.write_text(printed)
    assert main(["train-zero", "--config", str(path), "--print_config"]) == 0
    assert capsys.readouterr().out == printed
    assert main(["train-zero", "--config", str(path), "--seed", "7", "--print_config"]) == 0
    changed = yaml.safe_load(capsys.readouterr().out)
    assert changed["run"]["seed"] == 7 and changed["run"]["batch_size"] == 3


def test_bad_config_files_are_one_line_errors(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text("run:\n  batch_sise: 3\n")
    assert main(["train-zero", "--config", str(path)]) == 2
    assert capsys.readouterr().err == f"error: --config {path}: unknown run keys: batch_sise\n"
    path.write_text("run: [1, 2\n")
    assert main(["train-zero", "--config", str(path)]) == 2
    assert capsys.readouterr().err.startswith(f"error: {path} is not valid YAML")


def test_test_report_folder_keeps_the_resolved_options(bench, checkpoint, tmp_path):
    report = tmp_path / "report"
    argv = ["test-few", "--data_path", str(bench), "--shot", "2", "--ckpt_path", str(checkpoint)]
    assert main([*argv, "--report", str(report), "--log_path", str(tmp_path / "log")]) == 0
    record = yaml.safe_load((report / "config.yaml").read_text())
    assert record["command"] == "test-few"
    assert record["run"]["ckpt_path"] == str(checkpoint) and record["run"]["setting"] == "few"
    assert record["model"] == {}  # nothing overrides the checkpoint's model
