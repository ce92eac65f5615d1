"""Shared fixtures: small random-init detectors (everything offline, on the CPU)."""

from __future__ import annotations

import pytest
import torch

from iqeclip.config import ModelConfig
from iqeclip.model import IQEClip

TINY = dict(model_name="iqe-tiny", pretrain="none", img_size=64)


def build_tiny(seed: int = 0, **overrides) -> IQEClip:
    """A random-init ``iqe-tiny`` detector at 64 px (4x4 patch grid), seeded."""
    torch.manual_seed(seed)
    return IQEClip.build(ModelConfig(**{**TINY, **overrides}))


@pytest.fixture(scope="session")
def tiny() -> IQEClip:
    return build_tiny()
