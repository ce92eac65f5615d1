"""Scoring: patch-level logits to anomaly maps and image scores.

Per tapped level the projected patch tokens are compared with two references: the IQM query
features ("query" branch, plain cosine, no temperature) and the text embeddings ("text" branch,
cosine times ``exp(prompt_temp)``). Each comparison gives two logits (normal, abnormal) per patch.
Maps are made by upsampling the logits to the image size (bilinear, align_corners) and *then*
taking the softmax, as the published code does (computed as a sigmoid of the upsampled logit
difference, which is the same function).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F

from iqeclip.model.invariance import per_image

TEXT_WEIGHT = 0.2
QUERY_WEIGHT = 0.8
SIGMA = 8.0
TRUNCATE = 4.0

Setting = Literal["zero", "few"]


def patch_scores(logits: torch.Tensor) -> torch.Tensor:
    """Mean abnormal probability over the patches.

    Args:
        logits: ``(..., L, 2)``.

    Returns:
        ``(...)``.
    """
    return logits.softmax(dim=-1)[..., 1].mean(dim=-1)


def probability_maps(logits: torch.Tensor, size: int) -> torch.Tensor:
    """Upsample patch logits to pixels, then softmax over (normal, abnormal).

    A two-way softmax is the sigmoid of the logit difference, and bilinear upsampling is
    linear, so ``softmax(up(l))[1] = sigmoid(up(l1 - l0))``: one channel is upsampled instead
    of two (equal up to float rounding; tested).

    Args:
        logits: ``(..., L, 2)`` with ``L`` a square number of patches.
        size: output side in pixels.

    Returns:
        ``(..., size, size)`` abnormal probability (the normal one is ``1 - p``).
    """
    *lead, n_patch, _ = logits.shape
    grid = math.isqrt(n_patch)
    if grid * grid != n_patch:
        raise ValueError(f"{n_patch} patches do not form a square grid")
    diff = (logits[..., 1] - logits[..., 0]).reshape(-1, 1, grid, grid)
    up = F.interpolate(diff, size=(size, size), mode="bilinear", align_corners=True)
    return torch.sigmoid(up).reshape(*lead, size, size)


def gaussian_kernel(sigma: float = SIGMA, truncate: float = TRUNCATE) -> torch.Tensor:
    """The 1-D kernel of ``scipy.ndimage.gaussian_filter``: radius ``int(truncate*sigma+0.5)``."""
    radius = int(truncate * sigma + 0.5)
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    return k / k.sum()


def _symmetric_index(n: int, radius: int, device: torch.device) -> torch.Tensor:
    """Indices of ``scipy``'s 'reflect' boundary (edge sample repeated), valid for any radius."""
    i = torch.arange(-radius, n + radius, device=device) % (2 * n)
    return torch.where(i >= n, 2 * n - 1 - i, i)


def gaussian_blur(
    maps: torch.Tensor, sigma: float = SIGMA, truncate: float = TRUNCATE
) -> torch.Tensor:
    """Separable Gaussian blur on the maps' device, equal to ``scipy.ndimage.gaussian_filter``
    with ``mode='reflect'`` over the last two axes.

    Args:
        maps: ``(B, H, W)``.

    Returns:
        ``(B, H, W)`` blurred maps.
    """
    kernel = gaussian_kernel(sigma, truncate).to(maps.device, maps.dtype)
    radius = kernel.numel() // 2
    b, h, w = maps.shape
    x = maps.index_select(2, _symmetric_index(w, radius, maps.device))
    x = F.conv1d(x.reshape(b * h, 1, -1), kernel.view(1, 1, -1)).reshape(b, h, w)
    x = x.index_select(1, _symmetric_index(h, radius, maps.device))
    x = x.transpose(1, 2).reshape(b * w, 1, -1)
    return F.conv1d(x, kernel.view(1, 1, -1)).reshape(b, w, h).transpose(1, 2)


def _pixel_mean(maps: torch.Tensor) -> torch.Tensor:
    return maps.mean(dim=(1, 2))


def score(
    query_logits: torch.Tensor, text_logits: torch.Tensor, size: int, setting: Setting
) -> tuple[torch.Tensor, torch.Tensor]:
    """Anomaly maps and image scores of a batch.

    Pixel map (both settings): per branch the mean of the level maps, blended
    ``0.2 * text + 0.8 * query``, then blurred with a Gaussian of sigma 8.
    Image score: zero-shot, the sum over levels and branches of the patch-mean abnormal
    probability; few-shot, the pixel mean of each branch's unsmoothed level-averaged map, summed.

    Args:
        query_logits: ``(T, B, L, 2)`` query-branch logits.
        text_logits: ``(T, B, L, 2)`` text-branch logits.
        size: map side in pixels.
        setting: ``zero`` or ``few``.

    Returns:
        maps ``(B, size, size)`` and image scores ``(B,)``.
    """
    query_map = probability_maps(query_logits, size).mean(dim=0)
    text_map = probability_maps(text_logits, size).mean(dim=0)
    maps = gaussian_blur(TEXT_WEIGHT * text_map + QUERY_WEIGHT * query_map)
    if setting == "zero":
        image = patch_scores(query_logits).sum(dim=0) + patch_scores(text_logits).sum(dim=0)
    elif setting == "few":
        image = per_image(_pixel_mean, query_map) + per_image(_pixel_mean, text_map)
    else:
        raise ValueError(f"unknown setting {setting!r}")
    return maps, image


def score_range(setting: Setting, levels: int) -> tuple[float, float]:
    """The interval an image score of :func:`score` lies in: zero-shot ``[0, 2 * levels]`` (a
    mean probability per level and branch, summed), few-shot ``[0, 2]`` (one per branch)."""
    return (0.0, 2.0 * levels) if setting == "zero" else (0.0, 2.0)
