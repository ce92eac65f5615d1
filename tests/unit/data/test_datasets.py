"""Zero-shot batching and the few-shot training set."""

from __future__ import annotations

import torch

from iqeclip.data.datasets import HomogeneousBatchSampler, augmented_support
from iqeclip.data.layout import support_set
from iqeclip.data.synth import write_benchmark


def test_batches_never_mix_datasets_and_cover_everything_once():
    groups = [range(0, 7), range(7, 10), range(10, 27)]
    sampler = HomogeneousBatchSampler(groups, batch_size=4, seed=1)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 2 + 1 + 5
    for batch in batches:
        assert len({next(i for i, g in enumerate(groups) if idx in g) for idx in batch}) == 1
        assert 1 <= len(batch) <= 4
    assert sorted(i for b in batches for i in b) == list(range(27))
    sampler.set_epoch(1)
    assert list(sampler) != batches
    sampler.set_epoch(0)
    assert list(sampler) == batches


def test_augmented_support_set(tmp_path):
    write_benchmark(tmp_path, size=2, image_size=32)
    abnormal, normal = support_set(tmp_path, "Brain", 2, 0)
    data = augmented_support(abnormal, normal, 32, segmentation=True)
    images, masks, labels, flags = data.tensors
    assert images.shape == (44, 3, 32, 32) and masks.shape == (44, 32, 32)
    assert labels.tolist() == [1] * 22 + [0] * 22 and flags.all()
    assert masks[:22].flatten(1).any(1).all() and not masks[22:].any()
    assert images.dtype == torch.float32 and images.min() >= 0 and images.max() <= 1
