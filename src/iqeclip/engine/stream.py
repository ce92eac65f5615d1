"""The one scoring stream: batches of images in, ``(payload, maps, scores)`` out.

Every command that scores images runs its batches through :func:`stream`: the test and the
final test of training (:func:`~iqeclip.engine.evaluate.predict_samples`), calibrate, predict
and serve (:func:`~iqeclip.inference.inputs.scored_items`) and the benchmark's pipeline figure.
What differs between them are the options: where the batches come from and how ranks share
them (the caller's), the frozen-feature cache (``cache``), and pinning a batch that the loader
did not pin (``pin_batches``). The detector is the PyTorch model or any
:class:`~iqeclip.inference.detectors.Detector` (the ONNX one takes no cache).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

import torch

from iqeclip.data.readers import as_input
from iqeclip.engine.cache import FeatureCache
from iqeclip.runtime.device import pin

T = TypeVar("T")

__all__ = ["forward", "stream"]


def forward(
    model: Any, images: torch.Tensor, setting: str, cache: FeatureCache | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Maps ``(B, S, S)`` and image scores ``(B,)`` of a CPU batch of uint8 images
    ``(B, 3, S, S)``: through the feature cache when there is one (the frozen backbone's
    features read or stored), else the detector's ``predict``."""
    if cache is not None:
        patch, glob = cache.features(images, model.device)
        return model.predict_features(patch, glob, setting)
    return model.predict(as_input(images, model.device), setting)


def stream(
    model: Any,
    batches: Iterable[tuple[torch.Tensor, T]],
    setting: str,
    cache: FeatureCache | None = None,
    pin_batches: bool = False,
) -> Iterator[tuple[T, torch.Tensor, torch.Tensor]]:
    """Score ``(images, payload)`` batches in order: yields ``(payload, maps, scores)``.

    Batches are drawn one at a time, so a DataLoader behind ``batches`` reads the next while
    this one is scored. A PyTorch detector's head is in eval mode while the stream runs and is
    put back as it was when the stream ends (exhausted or closed); nothing keeps gradients.
    ``pin_batches`` pins each batch on CUDA so that its copy overlaps (a loader with
    ``pin_memory`` has done it already).
    """
    head = getattr(model, "head", None)
    was_training = head is not None and head.training
    if head is not None:
        head.eval()
    try:
        for images, payload in batches:
            if pin_batches and pin(model.device):
                images = images.pin_memory()
            with torch.no_grad():
                maps, scores = forward(model, images, setting, cache)
            yield payload, maps, scores
    finally:
        if head is not None:
            head.train(was_training)
