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

TINY = dict(model_name="iqe-tiny", pretrain="none", img_size=64)


def build_tiny(seed: int = 0, **overrides) -> IQEClip:
    """A random-init ``iqe-tiny`` detector at 64 px (4x4 patch grid), seeded."""
    torch.manual_seed(seed)
    return IQEClip.build(ModelConfig(**{**TINY, **overrides}))


@pytest.fixture(scope="session")
def tiny() -> IQEClip:
    return build_tiny()


@pytest.fixture(scope="session")
def bench(tmp_path_factory) -> Path:
    """The synthetic benchmark: six datasets, 2 test images per class, 64 px, few-shot lists."""
    root = tmp_path_factory.mktemp("bench")
    write_benchmark(root, size=2, seed=0, image_size=64)
    return root
