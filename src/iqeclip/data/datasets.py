"""Torch datasets and samplers for the paper's protocols.

* :class:`ImageDataset` reads samples lazily (:func:`~iqeclip.data.readers.model_input`: for
  BMAD PNGs the reference PIL decode + bicubic resize; slices of volumes and series too) and
  returns uint8 images, bool masks and labels.
* :class:`HomogeneousBatchSampler` gives the zero-shot protocol's dataset-homogeneous batches:
  each source is shuffled and chunked, then all chunks are shuffled, anew every epoch.
* :func:`augmented_support` builds the few-shot training set: K abnormal + K normal support images,
  each in its 11 fixed augmentations.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import Dataset, Sampler, TensorDataset

from iqeclip.data.augment import augment
from iqeclip.data.readers import DEFAULT_READING, mask_input, model_input, to_float
from iqeclip.data.sample import Sample


class ImageDataset(Dataset):
    """Samples as tensors.

    Args:
        samples: images with labels and optional mask paths.
        size: square side in pixels.
        segmentation: the samples come from a dataset with pixel masks (returned with each
            item, so that a batch knows whether its segmentation losses apply).

    Items are ``(image uint8 (3, S, S), mask bool (S, S), label int64 (), segmentation bool ())``;
    samples without a mask get an all-zero mask.
    """

    def __init__(self, samples: Sequence[Sample], size: int, segmentation: bool = False) -> None:
        self.samples = list(samples)
        self.size = size
        self.segmentation = segmentation

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, ...]:
        s = self.samples[index]
        reading = s.reading or DEFAULT_READING
        image = model_input(s.image, s.index, self.size, reading)
        if s.mask is not None:
            mask = mask_input(s.mask, s.image, s.index, self.size, reading)
        else:
            mask = torch.zeros(self.size, self.size, dtype=torch.bool)
        return image, mask, torch.tensor(s.label), torch.tensor(self.segmentation)


class EpochBatchSampler(Sampler[list[int]]):
    """Batches that are a pure function of ``(seed, epoch)``, so a run can resume mid-epoch.

    Call :meth:`set_epoch` before each epoch; ``skip`` leaves out the batches already done.
    """

    def __init__(self, batch_size: int, seed: int) -> None:
        self.batch_size = batch_size
        self.seed = seed
        self.epoch = 0
        self.skip = 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        self.epoch, self.skip = epoch, skip

    def batches(self) -> list[list[int]]:
        """All batches of the current epoch, in order."""
        raise NotImplementedError

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.batches()[self.skip :])

    def __len__(self) -> int:
        return len(self.batches()) - self.skip


class HomogeneousBatchSampler(EpochBatchSampler):
    """Batches that never mix datasets, reshuffled every epoch (the zero-shot protocol).

    Args:
        groups: dataset indices of each source, e.g. ``[[0..n0), [n0..n0+n1), ...]``.
        batch_size: batch size; the last chunk of each source may be smaller.
        seed: base seed; epoch ``e`` uses ``seed + e``.
    """

    def __init__(self, groups: Sequence[Sequence[int]], batch_size: int, seed: int) -> None:
        super().__init__(batch_size, seed)
        self.groups = [list(g) for g in groups if len(g)]

    def batches(self) -> list[list[int]]:
        rng = random.Random(self.seed + self.epoch)
        chunks = []
        for group in self.groups:
            order = list(group)
            rng.shuffle(order)
            chunks += [
                order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size)
            ]
        rng.shuffle(chunks)
        return chunks


class ShuffledBatchSampler(EpochBatchSampler):
    """A fresh permutation of ``n`` items every epoch, cut into batches (the few-shot protocol)."""

    def __init__(self, n: int, batch_size: int, seed: int) -> None:
        super().__init__(batch_size, seed)
        self.n = n

    def batches(self) -> list[list[int]]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        order = torch.randperm(self.n, generator=generator).tolist()
        return [order[i : i + self.batch_size] for i in range(0, self.n, self.batch_size)]


class ShardedBatchSampler(Sampler[list[int]]):
    """One rank's part of another sampler's batches, for distributed training.

    The inner sampler makes *global* batches (per-rank batch x world size); each is split into
    ``world`` nearly equal parts and this rank takes part ``rank``, so every step of the world
    together sees exactly the global batch a single process would. Global batches smaller than
    the world size are left out (every rank must take every step).
    """

    def __init__(self, inner: EpochBatchSampler, rank: int, world: int) -> None:
        self.inner, self.rank, self.world = inner, rank, world

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        self.inner.set_epoch(epoch, skip)

    def batches(self) -> list[list[int]]:
        return [b for b in self.inner.batches() if len(b) >= self.world]

    def __iter__(self) -> Iterator[list[int]]:
        for batch in self.batches()[self.inner.skip :]:
            size, extra = divmod(len(batch), self.world)
            start = self.rank * size + min(self.rank, extra)
            yield batch[start : start + size + (self.rank < extra)]

    def __len__(self) -> int:
        return len(self.batches()) - self.inner.skip


def augmented_support(
    abnormal: Sequence[Sample], normal: Sequence[Sample], size: int, segmentation: bool
) -> TensorDataset:
    """The few-shot training set: 11 augmentations of each of the K abnormal and K normal images.

    Returns:
        ``TensorDataset`` of images float ``(22K, 3, S, S)``, masks bool ``(22K, S, S)``, labels
        ``(22K,)`` and segmentation flags ``(22K,)``, abnormal samples first.
    """
    parts = []
    for samples, label in ((abnormal, 1), (normal, 0)):
        data = ImageDataset(samples, size, segmentation)
        items = [data[i] for i in range(len(data))]
        images = to_float(torch.stack([item[0] for item in items]))
        masks = torch.stack([item[1] for item in items]).unsqueeze(1).float()
        images, masks = augment(images, masks)
        n = len(images)
        flags = torch.full((n,), segmentation)
        parts.append((images, masks[:, 0] > 0.5, torch.full((n,), label), flags))
    return TensorDataset(*(torch.cat(p) for p in zip(*parts, strict=True)))
