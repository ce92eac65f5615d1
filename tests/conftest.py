"""Shared fixtures: small random-init detectors (everything offline, on the CPU)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

# Keep the tests' feature caches and demo data out of the user's ~/.cache (subprocesses inherit).
os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="iqeclip-test-cache-")

import pytest
import torch

from iqeclip.config import ModelConfig
from iqeclip.data.synth import write_benchmark
from iqeclip.model.detector import IQEClip


def pytest_collection_modifyitems(config, items):
    """Tests marked ``cuda`` skip on a machine without a CUDA GPU."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (scripts/gpu_check.sh runs these)")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


TINY = dict(model_name="iqe-tiny", pretrain="none", img_size=64)


def build_tiny(seed: int = 0, device: str = "cpu", **overrides) -> IQEClip:
    """A random-init ``iqe-tiny`` detector at 64 px (4x4 patch grid), seeded: the same weights
    on every device (drawn on the CPU, then moved)."""
    torch.manual_seed(seed)
    model = IQEClip.build(ModelConfig(**{**TINY, **overrides}))
    return model if device == "cpu" else model.to(device)


@pytest.fixture(scope="session")
def tiny() -> IQEClip:
    return build_tiny()


@pytest.fixture(scope="session")
def bench(tmp_path_factory) -> Path:
    """The synthetic benchmark: six datasets, 2 test images per class, 64 px, few-shot lists."""
    root = tmp_path_factory.mktemp("bench")
    write_benchmark(root, size=2, seed=0, image_size=64)
    return root
