"""Running on several processes with ``torch.distributed`` (launched by ``torchrun``).

A plain run never creates a process group. Under ``torchrun`` (``WORLD_SIZE`` > 1 in the
environment) every command calls :func:`setup` once: NCCL on GPUs (one per local rank), gloo on
the CPU. Helpers here shard work by rank and gather results so that rank 0 sees everything.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import Any, TypeVar

import torch
import torch.distributed as dist

from iqeclip.runtime import launched_by_torchrun

T = TypeVar("T")


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    return rank() == 0


def no_progress_bar() -> bool:
    """Progress bars only on rank 0, and only on a terminal: redirected to a log file, a bar's
    redraws would make one huge line."""
    return not is_main() or not sys.stderr.isatty()


def setup(device: str = "auto") -> torch.device | None:
    """Create the process group when launched by torchrun; returns this rank's device.

    Args:
        device: ``auto`` picks ``cuda:LOCAL_RANK`` when CUDA is available, else the CPU.

    Returns:
        The device for this rank, or ``None`` outside torchrun (the caller decides).
    """
    if not launched_by_torchrun() or is_distributed():
        return None
    local = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    if use_cuda:
        torch.cuda.set_device(local)
    dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return torch.device("cuda", local) if use_cuda else torch.device("cpu")


def teardown() -> None:
    if is_distributed():
        dist.destroy_process_group()


def shard(items: Sequence[T]) -> list[T]:
    """This rank's share of ``items``: every ``world``-th item, starting at ``rank``."""
    return list(items[rank() :: world_size()])


def gather(obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order (only meaningful where all ranks call it)."""
    if not is_distributed():
        return [obj]
    out: list[Any] = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast(obj: T) -> T:
    """Rank 0's ``obj`` on every rank."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier() -> None:
    if is_distributed():
        dist.barrier()
