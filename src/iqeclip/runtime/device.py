"""Where and how reproducibly a run computes: the device and the seeds."""

from __future__ import annotations

import os
import random

import numpy as np
import torch

from iqeclip.errors import UserError, param
from iqeclip.runtime import distributed


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def loader_workers(workers: int | None, device: torch.device) -> int:
    """DataLoader worker processes: as asked, else 4 on CUDA (the GPU waits on decoding) and 0 on
    the CPU (where the model needs the cores)."""
    return workers if workers is not None else (4 if device.type == "cuda" else 0)


def pin(device: torch.device) -> bool:
    """Whether loaders pin their batches: on CUDA, so that copies overlap with the model."""
    return device.type == "cuda"


def resolve_device(device: str) -> torch.device:
    """``auto`` is CUDA when available, else the CPU; anything else must be usable."""
    if distributed.is_distributed() and (
        (device == "auto" and torch.cuda.is_available()) or device == "cuda"
    ):
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise UserError(f"{param('device')} {device!r} is not a torch device") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"{param('device')} {device}: CUDA is not available on this machine")
    return dev
