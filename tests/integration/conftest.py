"""A small synthetic benchmark shared by the integration tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from iqeclip.data.synth import write_benchmark

# What this machine needs added to the paper's commands: data, a small random-init backbone.
MODEL = ["--model_name", "iqe-tiny", "--pretrain", "none", "--img_size", "64"]


@pytest.fixture(scope="session")
def bench(tmp_path_factory) -> Path:
    """Six datasets, 2 test images per class, 64 px, with few-shot lists."""
    root = tmp_path_factory.mktemp("bench")
    write_benchmark(root, size=2, seed=0, image_size=64)
    return root
