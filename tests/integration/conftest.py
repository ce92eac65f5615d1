"""What this machine adds to the paper's commands (a small random-init backbone), and a trained
few-shot checkpoint shared by the tests that only need one."""

from __future__ import annotations

from pathlib import Path

import pytest

MODEL = ["--model_name", "iqe-tiny", "--pretrain", "none", "--img_size", "64"]


@pytest.fixture(scope="session")
def checkpoint(bench, tmp_path_factory) -> Path:
    """``Brain_2.pth``: one epoch of 2-shot training on the synthetic benchmark."""
    from iqeclip.cli.main import main

    out = tmp_path_factory.mktemp("ck")
    args = ["train-few", "--data_path", str(bench), *MODEL, "--shot", "2", "--epoch", "1"]
    assert main([*args, "--save_dir", str(out), "--log_path", str(out / "log")]) == 0
    return out / "Brain_2.pth"
