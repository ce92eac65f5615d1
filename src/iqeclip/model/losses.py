"""Training losses of IQE-CLIP (inherited from MVFA-AD), computed on the device.

Per tapped level and per branch: focal + dice on the pixel maps (only for data with masks) and
a binary cross-entropy on the patch-mean abnormal probability (always). Terms are summed over
levels and branches, all with weight 1.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from iqeclip.model.detector import LevelLogits
from iqeclip.model.scoring import patch_scores, probability_maps

SMOOTH = 1e-5


def focal_loss(prob: torch.Tensor, masks: torch.Tensor, gamma: float = 2.0) -> torch.Tensor:
    """Focal loss on two-class *probabilities* with a smoothed one-hot target.

    ``p_t = sum_c onehot_c p_c + 1e-5`` over (normal ``1 - p``, abnormal ``p``) with the one-hot
    clamped to ``[1e-5, 1 - 1e-5]``; ``loss = -(1 - p_t)^gamma log p_t`` averaged over the
    pixels of each image.

    Args:
        prob: ``(..., B, H, W)`` abnormal probability.
        masks: ``(B, H, W)`` bool or {0, 1} ground truth.

    Returns:
        ``(..., B)`` mean loss per image (all images have the same size, so the mean over ``B``
        is the published mean over every pixel of the batch).
    """
    hot = masks.to(prob.dtype) * (1 - 2 * SMOOTH) + SMOOTH  # clamped one-hot, abnormal channel
    p_t = (1 - hot) * (1 - prob) + hot * prob + SMOOTH
    return (-((1 - p_t) ** gamma) * p_t.log()).flatten(-2).mean(-1)


def dice_loss(prob: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Binary dice loss ``1 - mean_b (2 sum pm + 1) / (sum p + sum m + 1)``.

    Args:
        prob: ``(..., B, H, W)`` abnormal probability.
        masks: ``(B, H, W)`` ground truth.

    Returns:
        ``(...)`` loss.
    """
    m = masks.to(prob.dtype)
    inter = (prob * m).flatten(-2).sum(-1)
    ratio = (2 * inter + 1) / (prob.flatten(-2).sum(-1) + m.flatten(-2).sum(-1) + 1)
    return 1 - ratio.mean(-1)


def detection_loss(patch_prob: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``BCEWithLogits`` applied to the patch-mean *probability* (as published), per level.

    Args:
        patch_prob: ``(T, B)`` patch-mean abnormal probability.
        labels: ``(B,)`` 0/1 image labels.

    Returns:
        ``(T,)`` loss.
    """
    target = labels.to(patch_prob.dtype).expand_as(patch_prob)
    return F.binary_cross_entropy_with_logits(patch_prob, target, reduction="none").mean(-1)


def iqe_loss(
    logits: LevelLogits, masks: torch.Tensor, labels: torch.Tensor, segmentation: bool
) -> torch.Tensor:
    """Total training loss of a batch.

    Args:
        logits: per-level logits of both branches, ``(T, B, L, 2)`` each.
        masks: ``(B, H, W)`` ground-truth masks (all zero for normal images).
        labels: ``(B,)`` image labels.
        segmentation: the batch comes from a dataset with pixel masks: add focal + dice.

    Returns:
        Scalar loss: sum over levels and branches of ``[focal + dice] + bce``.
    """
    total = logits.query.new_zeros(())
    for branch in (logits.query, logits.text):
        total = total + detection_loss(patch_scores(branch), labels).sum()
        if segmentation:
            prob = probability_maps(branch, masks.shape[-1])  # (T, B, H, W)
            focal = focal_loss(prob, masks).mean(-1)  # (T,)
            total = total + focal.sum() + dice_loss(prob, masks).sum()
    return total
