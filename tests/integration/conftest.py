"""What this machine adds to the paper's commands (a small random-init backbone), and a trained
few-shot checkpoint shared by the tests that only need one."""

from __future__ import annotations

from pathlib import Path

import pytest

MODEL = ["--model_name", "iqe-tiny", "--pretrain", "none", "--img_size", "64"]


def train_few_argv(bench: Path, epochs: int) -> list[str]:
    """``train-few`` of 2-shot Brain (the default object) on the benchmark with :data:`MODEL`."""
    return ["train-few", "--data_path", str(bench), *MODEL, "--shot", "2", "--epoch", str(epochs)]


def few_shot_eval_argv(bench: Path, ckpt: Path) -> list[str]:
    """``test-few`` of a 2-shot checkpoint on the benchmark."""
    return ["test-few", "--data_path", str(bench), "--shot", "2", "--ckpt_path", str(ckpt)]


def predict_argv(ckpt: Path, *inputs: Path | str, out: Path) -> list[str]:
    """``predict`` of ``inputs`` (files or folders) with ``ckpt``, writing into ``out``."""
    return ["predict", "--ckpt_path", str(ckpt), *map(str, inputs), "--out", str(out)]


def output_argv(folder: Path) -> list[str]:
    """Checkpoints into ``folder`` and the log at ``folder/log``."""
    return ["--save_dir", str(folder), "--log_path", str(folder / "log")]


@pytest.fixture(scope="session")
def checkpoint(bench, tmp_path_factory) -> Path:
    """``Brain_2.pth``: one epoch of 2-shot training on the synthetic benchmark."""
    from iqeclip.cli.main import main

    out = tmp_path_factory.mktemp("ck")
    assert main([*train_few_argv(bench, 1), *output_argv(out)]) == 0
    return out / "Brain_2.pth"
