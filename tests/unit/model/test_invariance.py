"""One image, one answer: an image's maps and scores are the same alone and in any batch, bit
for bit (what ``serve``, scoring a volume's last slice in a batch of its own, and ``predict``,
scoring the volume in one batch, rely on to give the same answer)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from iqeclip.config import ModelConfig
from iqeclip.model.bank import MemoryBank
from iqeclip.model.detector import IQEClip
from iqeclip.model.invariance import per_image

SLICES = ((0, 1), (5, 6), (2, 5), (0, 4))  # batches of 1, 3 and 4 out of 6


@pytest.mark.parametrize(("name", "size"), [("iqe-tiny", 64), ("ViT-B-16", 224)])
def test_maps_and_scores_do_not_depend_on_the_batch(name: str, size: int):
    torch.manual_seed(0)
    model = IQEClip.build(ModelConfig(model_name=name, pretrain="none", img_size=size))
    patch, glob = model.features(torch.rand(6, 3, size, size))
    for bank in (False, True):
        if bank:  # random unit entries, 40 per level
            dim = model.arch.embed_dim
            levels = [F.normalize(torch.randn(40, dim), dim=-1) for _ in patch]
            model.bank = MemoryBank(levels, 0.5)
        for setting in ("zero", "few"):
            maps, scores = model.predict_features(patch, glob, setting)
            for lo, hi in SLICES:
                part_maps, part_scores = model.predict_features(
                    patch[:, lo:hi], glob[lo:hi], setting
                )
                assert torch.equal(part_maps, maps[lo:hi]), (bank, setting, lo, hi)
                assert torch.equal(part_scores, scores[lo:hi]), (bank, setting, lo, hi)


@pytest.mark.parametrize("dim", [0, 1])
def test_per_image_calls_the_operation_on_one_image_at_a_time(dim: int):
    x = torch.randn(2, 5, 3) if dim == 1 else torch.randn(5, 2, 3)
    seen: list[torch.Size] = []

    def double(t: torch.Tensor) -> torch.Tensor:
        seen.append(t.shape)
        return 2 * t

    assert torch.equal(per_image(double, x, dim), 2 * x)
    assert len(seen) == 5 and all(shape[dim] == 1 for shape in seen)
    assert per_image(double, x.narrow(dim, 0, 0), dim).shape[dim] == 0  # an empty batch
