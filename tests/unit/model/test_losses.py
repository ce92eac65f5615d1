"""Loss terms on hand-made inputs."""

from __future__ import annotations

import math

import torch

from iqeclip.model.detector import LevelLogits
from iqeclip.model.losses import SMOOTH, detection_loss, dice_loss, focal_loss, iqe_loss
from iqeclip.model.scoring import patch_scores


def test_focal_by_hand():
    p = torch.tensor([[[0.9, 0.2]]])  # (B=1, H=1, W=2) abnormal probability
    mask = torch.tensor([[[True, False]]])
    # pixel 0: abnormal, p_t = (1-s)*0.9 + s*0.1 + s; pixel 1: normal, p_t = (1-s)*0.8 + s*0.2 + s
    pt = torch.tensor(
        [(1 - SMOOTH) * 0.9 + SMOOTH * 0.1 + SMOOTH, (1 - SMOOTH) * 0.8 + SMOOTH * 0.2 + SMOOTH]
    )
    want = (-((1 - pt) ** 2) * pt.log()).mean()
    torch.testing.assert_close(focal_loss(p, mask), want.view(1))


def test_dice_by_hand():
    p = torch.tensor([[[0.5, 0.5], [0.5, 0.5]], [[0.0, 0.0], [0.0, 0.0]]])
    masks = torch.tensor([[[1, 1], [0, 0]], [[0, 0], [0, 0]]], dtype=torch.bool)
    # sample 0: (2*1 + 1) / (2 + 2 + 1) = 0.6; sample 1: (0 + 1) / (0 + 0 + 1) = 1
    torch.testing.assert_close(dice_loss(p, masks), torch.tensor(1 - (0.6 + 1.0) / 2))


def test_detection_is_bce_with_logits_on_a_probability():
    prob = torch.tensor([[0.25, 0.75]])
    labels = torch.tensor([0, 1])
    sig = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    want = -(math.log(1 - sig(0.25)) + math.log(sig(0.75))) / 2
    torch.testing.assert_close(detection_loss(prob, labels), torch.tensor([want]))


def test_total_loss_sums_levels_and_branches():
    torch.manual_seed(0)
    logits = LevelLogits(query=torch.randn(3, 2, 4, 2), text=torch.randn(3, 2, 4, 2))
    masks = torch.zeros(2, 6, 6, dtype=torch.bool)
    masks[1, 2:4, 2:4] = True
    labels = torch.tensor([0, 1])
    bce = sum(detection_loss(patch_scores(b), labels).sum() for b in (logits.query, logits.text))
    torch.testing.assert_close(iqe_loss(logits, masks, labels, segmentation=False), bce)
    with_seg = iqe_loss(logits, masks, labels, segmentation=True)
    assert with_seg > bce
