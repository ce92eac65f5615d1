"""A memory of normal patches (``iqeclip bank``): an addition to the paper, not part of it.

A zero-shot checkpoint knows anomalies only from other datasets. A site with normal scans of its
own can add them as a memory: per tapped level, the head's projected patch features of the normal
images (the features the maps compare with the text and the IQM queries), unit length, reduced
by greedy coreset subsampling (:func:`coreset`) to at most ``bank_size`` entries. A test patch's
distance to the memory is ``1 - max cosine similarity`` to its nearest entry
(:func:`nearest_distance`, in chunks of the memory so that the peak stays bounded), per level;
the mean over levels is upsampled and blurred as the maps are, and fused with the zero-shot map
and score (:func:`fuse`). Without a bank nothing changes.

The bank travels inside the checkpoint (safetensors tensors ``bank.<level>``, and in the
metadata its record: the weight, the sizes, the images that went in with their sha256).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from iqeclip.errors import UserError
from iqeclip.model.scoring import gaussian_blur

__all__ = [
    "BANK_PREFIX",
    "CHUNK",
    "DEFAULT_BANK_SIZE",
    "DEFAULT_WEIGHT",
    "MemoryBank",
    "coreset",
    "fuse",
    "nearest_distance",
]

BANK_PREFIX = "bank."
"""The checkpoint's tensors of a bank: ``bank.0``, ``bank.1``... one ``(N, D)`` per level."""
DEFAULT_BANK_SIZE = 2048
"""Memory entries kept per level (docs/performance.md, "A bank of normal patches")."""
DEFAULT_WEIGHT = 0.5
"""The bank's share of the fused map and score (:func:`fuse`)."""
CHUNK = 4096
"""Memory entries compared at once: the peak is ``B * L * CHUNK`` similarities."""
_NORM_TOLERANCE = 1e-3


def coreset(
    features: torch.Tensor, size: int, seed: int = 0, first: int | None = None
) -> torch.Tensor:
    """Greedy k-center subsampling (PatchCore's coreset): start from one entry (``first``, else
    drawn with ``seed``), then repeatedly add the entry farthest (Euclidean) from those chosen
    (the first of equally far ones).

    Args:
        features: ``(N, D)``.
        size: entries to keep; all of them (in their order) when ``size >= N``.

    Returns:
        The indices chosen, in the order they were chosen.
    """
    n = features.shape[0]
    if size >= n:
        return torch.arange(n)
    if first is None:
        first = int(torch.randint(n, (1,), generator=torch.Generator().manual_seed(seed)))
    chosen = [first]
    nearest = torch.cdist(features, features[first : first + 1]).squeeze(1)
    for _ in range(size - 1):
        pick = int(torch.argmax(nearest))
        chosen.append(pick)
        nearest = torch.minimum(nearest, torch.cdist(features, features[pick : pick + 1])[:, 0])
    return torch.tensor(chosen)


def nearest_distance(
    patches: torch.Tensor, memory: torch.Tensor, chunk: int = CHUNK
) -> torch.Tensor:
    """``1 - max cosine similarity`` of each patch to the memory, the memory taken ``chunk``
    entries at a time (unit vectors in, so the dot product is the cosine).

    Args:
        patches: ``(..., D)`` unit vectors.
        memory: ``(N, D)`` unit vectors.

    Returns:
        ``(...)`` distances in [0, 2].
    """
    best = torch.full(patches.shape[:-1], -2.0, device=patches.device, dtype=patches.dtype)
    for start in range(0, memory.shape[0], chunk):
        block = memory[start : start + chunk].to(patches.dtype)
        best = torch.maximum(best, (patches @ block.T).amax(dim=-1))
    return 1.0 - best


def fuse(
    maps: torch.Tensor,
    scores: torch.Tensor,
    bank_maps: torch.Tensor,
    bank_scores: torch.Tensor,
    weight: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(1 - weight) * zero-shot + weight * bank``, for the maps and the image scores alike."""
    return (1 - weight) * maps + weight * bank_maps, (1 - weight) * scores + weight * bank_scores


class MemoryBank(nn.Module):
    """Per tapped level, the unit patch features of normal images.

    Args:
        memory: one ``(N_l, D)`` tensor per level.
        weight: the bank's share in :func:`fuse`.
    """

    def __init__(self, memory: Sequence[torch.Tensor], weight: float = DEFAULT_WEIGHT) -> None:
        super().__init__()
        self.weight = float(weight)
        self.count = len(memory)
        for level, entries in enumerate(memory):
            self.register_buffer(f"level{level}", entries.contiguous())

    @property
    def levels(self) -> list[torch.Tensor]:
        """The memory of each tapped level, in order."""
        return [getattr(self, f"level{level}") for level in range(self.count)]

    def score(self, patches: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Bank maps ``(B, size, size)`` and image scores ``(B,)`` of unit patch features
        ``(T, B, L, D)``: per level the distance to the nearest entry, averaged over levels;
        the map upsampled (bilinear, as the maps) and blurred, the score its patch maximum."""
        distances = torch.stack(
            [nearest_distance(p, m) for p, m in zip(patches, self.levels, strict=True)]
        ).mean(dim=0)  # (B, L)
        batch, n_patch = distances.shape
        grid = math.isqrt(n_patch)
        up = F.interpolate(
            distances.reshape(batch, 1, grid, grid),
            size=(size, size),
            mode="bilinear",
            align_corners=True,
        )
        return gaussian_blur(up[:, 0]), distances.amax(dim=1)

    def state(self) -> dict[str, torch.Tensor]:
        """The checkpoint tensors (``bank.<level>``)."""
        return {f"{BANK_PREFIX}{i}": t.detach().cpu().float() for i, t in enumerate(self.levels)}

    @classmethod
    def from_state(
        cls,
        state: Mapping[str, torch.Tensor],
        record: Mapping[str, Any],
        levels: int,
        dim: int,
        where: str,
    ) -> MemoryBank:
        """The bank of a checkpoint, checked: one tensor per tapped level, ``(N, dim)``, unit
        rows, as many as its record says.

        Raises:
            UserError: ``<where>: its bank ...`` on one line (a tampered or foreign bank).
        """
        names = sorted(state)
        expected = [f"{BANK_PREFIX}{i}" for i in range(levels)]
        if names != sorted(expected):
            raise UserError(f"{where}: its bank holds {names}, expected {expected} (one per level)")
        sizes = record.get("sizes")
        memory = [state[name] for name in expected]
        for name, entries in zip(expected, memory, strict=True):
            if entries.ndim != 2 or entries.shape[1] != dim or entries.shape[0] == 0:
                raise UserError(
                    f"{where}: its bank {name} has shape {tuple(entries.shape)}, expected (N, {dim})"
                )
            norms = entries.norm(dim=1)
            if not bool(((norms - 1).abs() <= _NORM_TOLERANCE).all()):
                raise UserError(
                    f"{where}: its bank {name} holds entries that are not unit vectors: the bank is corrupt"
                )
        if sizes != [int(m.shape[0]) for m in memory]:
            raise UserError(
                f"{where}: its bank's record says {sizes} entries, the tensors hold {[int(m.shape[0]) for m in memory]}"
            )
        weight = record.get("weight")
        if not isinstance(weight, (int, float)) or isinstance(weight, bool) or not 0 <= weight <= 1:
            raise UserError(f"{where}: its bank's weight is {weight!r}, not a number in [0, 1]")
        return cls(memory, float(weight))
