"""One image, one answer, whatever its batch: the few-row operations run image by image.

On the CPUs this project runs on, a matrix product over fewer than 4 rows (and a convolution
over a small batch) takes another kernel than the same product over more rows, and rounds
differently. A batched call of such an operation therefore made an image's result depend on
how many images shared its batch: a slice scored in a batch of one by ``serve`` and in a batch
of five by ``predict`` differed in the seventh digit. :func:`per_image` runs them one image at a
time, so that every call has the same shape whatever the batch (docs/model.md). The products
with hundreds of rows per image (the transformers', the projections of the patch tokens) and
those whose rows do not grow with the batch need no such care.
"""

from __future__ import annotations

from collections.abc import Callable

import torch


def per_image(
    fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, dim: int = 0
) -> torch.Tensor:
    """``fn(x)`` computed for each image's slice of ``x`` along ``dim`` alone, concatenated.

    In an ONNX export the batch is one call: a loop would fix the exported graph's batch size
    (the export is checked against PyTorch within 1e-4, ``tests/integration/test_export.py``).
    """
    if torch.onnx.is_in_onnx_export() or x.shape[dim] <= 1:
        return fn(x)
    return torch.cat([fn(part) for part in x.split(1, dim)], dim)
