"""What this machine adds to the paper's commands (a small random-init backbone), and a trained
few-shot checkpoint shared by the tests that only need one."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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


@contextlib.contextmanager
def failing_writes(prefix: str) -> Iterator[None]:
    """predict's ``.npy`` writes of the input whose names begin with ``prefix`` fail, as on a
    full disk, while the context lasts."""
    from iqeclip.errors import UserError
    from iqeclip.inference import writers

    save = writers._save_npy

    def failing(path: Path, array: Any) -> None:
        if path.name.startswith(prefix):
            raise UserError(f"cannot write {path}: No space left on device")
        save(path, array)

    writers._save_npy = failing
    try:
        yield
    finally:
        writers._save_npy = save


def calibrated(
    checkpoint: Path, folder: Path, image: float = 0.5, pixel: float | None = None, **extra: Any
) -> Path:
    """A copy of ``checkpoint`` in ``folder`` with the thresholds ``image`` and ``pixel`` (and
    any other fields of the record) stored as ``calibrate`` stores them."""
    import shutil

    from iqeclip.model.checkpoint import update_checkpoint_meta

    ckpt = folder / "calibrated.pth"
    shutil.copy(checkpoint, ckpt)
    record = {
        "image": image,
        "pixel": pixel,
        "volume": None,
        "rule": "target_fpr",
        "target_fpr": 0.05,
        "n_images": 20,
        "source": "a test",
        "setting": "few",
        **extra,
    }
    update_checkpoint_meta(ckpt, lambda meta: {"thresholds": record})
    return ckpt
