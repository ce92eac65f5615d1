"""Evaluation: score a test split and compute the metrics.

Image AUROC for every dataset; pixel AUROC over all pixels of all test images (normal images
included) for datasets with masks; plus image/pixel average precision, image F1-max and pixel
AUPRO (:mod:`iqeclip.metrics`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from iqeclip.data.datasets import ImageDataset
from iqeclip.data.io import to_float
from iqeclip.data.layout import Sample
from iqeclip.io_utils import atomic_write_text
from iqeclip.maps import Setting
from iqeclip.metrics import compute_metrics
from iqeclip.model import IQEClip


@dataclass
class Predictions:
    """Scores of a test split.

    Attributes:
        image_scores: ``(N,)`` image scores.
        labels: ``(N,)`` 0/1 image labels.
        maps: ``(N, H, W)`` float32 anomaly maps, or ``None`` when not kept.
        masks: ``(N, H, W)`` bool ground truth, or ``None`` without masks.
    """

    image_scores: np.ndarray
    labels: np.ndarray
    maps: np.ndarray | None
    masks: np.ndarray | None


def as_input(images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Model input in [0, 1] on ``device`` from uint8 (read from disk) or float (augmented) images."""
    images = images.to(device, non_blocking=True)
    return to_float(images) if images.dtype == torch.uint8 else images


@torch.no_grad()
def predict_samples(
    model: IQEClip,
    samples: Sequence[Sample],
    setting: Setting,
    batch_size: int,
    keep_maps: bool,
    workers: int = 0,
    desc: str = "test",
) -> Predictions:
    """Run the detector over ``samples``.

    Args:
        model: the detector (its head is put in eval mode and restored afterwards).
        samples: test samples.
        setting: ``zero`` or ``few`` (image-score rule).
        batch_size: images per forward pass.
        keep_maps: keep the pixel maps and masks (needed for pixel metrics).
        workers: DataLoader worker processes.
        desc: progress-bar label.
    """
    device = next(model.head.parameters()).device
    was_training = model.head.training
    model.head.eval()
    size = model.config.img_size
    n = len(samples)
    scores, labels = np.empty(n, np.float64), np.empty(n, np.int64)
    maps = np.empty((n, size, size), np.float32) if keep_maps else None
    masks = np.empty((n, size, size), bool) if keep_maps else None
    loader = DataLoader(ImageDataset(samples, size), batch_size=batch_size, num_workers=workers)
    start = 0
    for images, mask, label, _ in tqdm(loader, desc=desc, unit="batch", leave=False):
        batch_maps, batch_scores = model.predict(as_input(images, device), setting)
        stop = start + len(label)
        scores[start:stop] = batch_scores.double().cpu().numpy()
        labels[start:stop] = label.numpy()
        if keep_maps:
            maps[start:stop] = batch_maps.float().cpu().numpy()
            masks[start:stop] = mask.numpy()
        start = stop
    model.head.train(was_training)
    return Predictions(scores, labels, maps, masks)


def evaluate(
    model: IQEClip,
    samples: Sequence[Sample],
    setting: Setting,
    pixel_masks: bool,
    batch_size: int,
    workers: int = 0,
    desc: str = "test",
) -> dict[str, Any]:
    """Metrics of the detector on ``samples``.

    Returns:
        ``image_auroc``, ``image_ap``, ``image_f1_max`` and (``None`` without masks)
        ``pixel_auroc``, ``pixel_ap``, ``pixel_aupro``, plus ``n_images``.
    """
    groups = [("", list(samples), pixel_masks)]
    return evaluate_groups(model, groups, setting, batch_size, workers, desc)[""]


def evaluate_groups(
    model: IQEClip,
    groups: Sequence[tuple[str, Sequence[Sample], bool]],
    setting: Setting,
    batch_size: int,
    workers: int = 0,
    desc: str = "test",
) -> dict[str, dict[str, Any]]:
    """Metrics of several datasets, scored in at most two passes (with and without masks).

    Args:
        groups: ``(name, samples, pixel_masks)`` per dataset.

    Returns:
        The metrics of :func:`evaluate` per dataset name.
    """
    results: dict[str, dict[str, Any]] = {}
    for pixel in (True, False):
        chosen = [(name, list(samples)) for name, samples, p in groups if p == pixel]
        if not chosen:
            continue
        pred = predict_samples(
            model, [s for _, g in chosen for s in g], setting, batch_size, pixel, workers, desc
        )
        start = 0
        for name, samples in chosen:
            part = slice(start, start + len(samples))
            start = part.stop
            metrics = compute_metrics(
                pred.image_scores[part],
                pred.labels[part],
                pred.maps[part] if pixel else None,
                pred.masks[part] if pixel else None,
            )
            results[name] = {**metrics, "n_images": len(samples)}
    return results


def selection_score(metrics: dict[str, Any]) -> float:
    """The published selection score: image AUROC (+ pixel AUROC where masks exist)."""
    return metrics["image_auroc"] + (metrics["pixel_auroc"] or 0.0)


def metric_lines(name: str, metrics: dict[str, Any]) -> list[str]:
    """The published log lines ``<obj> AUC : 0.xxxx`` and, with masks, ``<obj> pAUC : 0.xxxx``."""
    lines = [f"{name} AUC : {round(metrics['image_auroc'], 4):.4f}"]
    if metrics.get("pixel_auroc") is not None:
        lines.append(f"{name} pAUC : {round(metrics['pixel_auroc'], 4):.4f}")
    return lines


def write_metrics_json(path: str | Path, metrics: dict[str, Any], **fields: Any) -> None:
    """Write ``fields`` and ``metrics`` as one JSON object, atomically."""
    record = {**fields, **metrics}
    # NaN (e.g. AUPRO without anomalous pixels) is not JSON: write null.
    record = {k: None if isinstance(v, float) and v != v else v for k, v in record.items()}
    atomic_write_text(Path(path), json.dumps(record, indent=2) + "\n")
