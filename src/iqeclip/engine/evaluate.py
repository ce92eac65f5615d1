"""Evaluation: score a test split and compute the metrics.

Image AUROC for every dataset; pixel AUROC over all pixels of all test images (normal images
included) for datasets with masks; plus image/pixel average precision, image F1-max and pixel
AUPRO (:mod:`iqeclip.metrics`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from iqeclip.data.datasets import ImageDataset
from iqeclip.data.readers import as_input
from iqeclip.data.sample import Sample
from iqeclip.engine.cache import FeatureCache
from iqeclip.engine.stream import stream
from iqeclip.metrics import PixelMetricAccumulator, compute_metrics, pixel_metrics
from iqeclip.model.detector import IQEClip
from iqeclip.model.scoring import Setting
from iqeclip.runtime import distributed
from iqeclip.runtime.device import pin
from iqeclip.runtime.files import atomic_write_text

MAX_EXACT_PIXELS = 2**26  # ~1,165 maps of 240 x 240: 256 MB of float32 maps, exact metrics

MapSink = Callable[[int, np.ndarray, np.ndarray], None]
ExampleSink = Callable[[int, np.ndarray, np.ndarray, np.ndarray, np.ndarray], None]
"""Receives ``(start index, scores (B,) float64, images (B, 3, H, W) uint8, maps (B, H, W)
float32, masks (B, H, W) bool)`` of every batch (e.g. :class:`~iqeclip.engine.testing.ExampleKeeper`)."""


class KeptMaps:
    """Keeps every map and mask of a pass: ``sink(start, maps (B, H, W), masks (B, H, W))``."""

    def __init__(self, n: int, size: int) -> None:
        self.maps = np.empty((n, size, size), np.float32)
        self.masks = np.empty((n, size, size), bool)

    def __call__(self, start: int, maps: np.ndarray, masks: np.ndarray) -> None:
        self.maps[start : start + len(maps)] = maps
        self.masks[start : start + len(maps)] = masks


class StreamedMaps:
    """Feeds the maps of consecutive groups of samples to one binned accumulator per group.

    Memory stays O(bins) per group whatever the test-set size (see
    :class:`~iqeclip.metrics.streaming.PixelMetricAccumulator` for the error bounds).
    """

    def __init__(self, sizes: Sequence[int]) -> None:
        self.ends = np.cumsum(sizes)
        self.accumulators = [PixelMetricAccumulator() for _ in sizes]

    def __call__(self, start: int, maps: np.ndarray, masks: np.ndarray) -> None:
        rows = np.arange(start, start + len(maps))
        group = np.searchsorted(self.ends, rows, side="right")
        for g in np.unique(group):
            pick = group == g
            self.accumulators[g].update(maps[pick], masks[pick])


class PixelHistograms:
    """Per image, the histograms of its map over its normal and anomalous pixels (``(n, 2, bins)``
    over [0, 1]): enough to recompute the pixel AUROC of any resample of the images
    (:func:`iqeclip.reproduce.cells.bootstrap_pixel_auroc`)."""

    def __init__(self, n: int, bins: int = 1000) -> None:
        self.counts = np.zeros((n, 2, bins), np.int64)
        self.edges = np.linspace(0.0, 1.0, bins + 1)

    def __call__(self, start: int, maps: np.ndarray, masks: np.ndarray) -> None:
        for i, (amap, mask) in enumerate(zip(maps, masks, strict=True)):
            for label in (0, 1):
                self.counts[start + i, label] = np.histogram(amap[mask == label], self.edges)[0]


class _Both:
    """Feeds every batch to two sinks."""

    def __init__(self, first: MapSink, second: MapSink) -> None:
        self.first, self.second = first, second

    def __call__(self, start: int, maps: np.ndarray, masks: np.ndarray) -> None:
        self.first(start, maps, masks)
        self.second(start, maps, masks)


def frozen_features(
    model: IQEClip, images: torch.Tensor, device: torch.device, cache: FeatureCache | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Backbone features of a CPU batch, through the cache when there is one."""
    if cache is not None:
        return cache.features(images, device)
    return model.features(as_input(images, device))


@torch.no_grad()
def predict_samples(
    model: IQEClip,
    samples: Sequence[Sample],
    setting: Setting,
    batch_size: int,
    workers: int = 0,
    desc: str = "test",
    cache: FeatureCache | None = None,
    sink: MapSink | None = None,
    examples: ExampleSink | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Run the detector over ``samples``.

    Args:
        model: the detector (its head is put in eval mode and restored afterwards).
        samples: test samples.
        setting: ``zero`` or ``few`` (image-score rule).
        batch_size: images per forward pass.
        workers: DataLoader worker processes.
        desc: progress-bar label.
        cache: frozen-feature cache to read from and fill (``None``: compute every time).
        sink: receives ``(start index, maps (B, H, W) float32, masks (B, H, W) bool)`` of every
            batch (e.g. :class:`KeptMaps`, :class:`StreamedMaps`); maps are not kept otherwise.
        examples: receives the scores and input images of every batch with its maps and masks.

    Returns:
        Image scores ``(N,)`` and labels ``(N,)``.
    """
    n = len(samples)
    scores, labels = np.empty(n, np.float64), np.empty(n, np.int64)
    # Batches are dealt round-robin to the ranks (one rank: all of them); after each round every
    # rank receives every batch's results, so all ranks hold the same scores and metrics, equal
    # to a single process's because each batch is computed exactly as a single process would.
    starts = list(range(0, n, batch_size))
    world, me = distributed.world_size(), distributed.rank()
    mine = [list(range(a, min(a + batch_size, n))) for a in starts[me::world]]
    loader = DataLoader(
        ImageDataset(samples, model.config.img_size),
        batch_sampler=mine,
        num_workers=workers,
        pin_memory=pin(model.device),
    )
    results = stream(model, ((batch[0], batch) for batch in loader), setting, cache)
    rounds = -(-len(starts) // world)
    for round_ in tqdm(
        range(rounds), desc=desc, unit="batch", leave=False, disable=distributed.no_progress_bar()
    ):
        local = None
        scored = next(results, None)
        if scored is not None:
            (images, mask, label, _), batch_maps, batch_scores = scored
            maps_wanted = sink is not None or examples is not None
            local = (
                batch_scores.double().cpu().numpy(),
                label.numpy(),
                batch_maps.float().cpu().numpy() if maps_wanted else None,
                mask.numpy() if maps_wanted else None,
                images.numpy() if examples is not None else None,
            )
        for k, result in enumerate(distributed.gather(local)):
            if result is None:
                continue
            start = starts[round_ * world + k]
            stop = start + len(result[0])
            scores[start:stop], labels[start:stop] = result[0], result[1]
            if sink is not None:
                sink(start, result[2], result[3])
            if examples is not None:
                examples(start, result[0], result[4], result[2], result[3])
    results.close()  # the head back in its mode
    return scores, labels


def evaluate(
    model: IQEClip,
    samples: Sequence[Sample],
    setting: Setting,
    pixel_masks: bool,
    *args: Any,
    **kwargs: Any,
) -> dict[str, Any]:
    """Metrics of the detector on ``samples`` (``scores_out[""]`` receives scores and labels).

    ``samples`` are scored as one group named ``""`` by :func:`evaluate_groups`, which owns the
    remaining arguments and their defaults: ``batch_size``, ``workers=0``, ``desc="test"``,
    ``cache=None``, ``max_exact_pixels=MAX_EXACT_PIXELS`` and ``scores_out=None``, positional
    or keyword as there.

    Returns:
        ``image_auroc``, ``image_ap``, ``image_f1_max`` and (``None`` without masks)
        ``pixel_auroc``, ``pixel_ap``, ``pixel_aupro``, plus ``n_images``.
    """
    groups = [("", list(samples), pixel_masks)]
    return evaluate_groups(model, groups, setting, *args, **kwargs)[""]


def evaluate_groups(
    model: IQEClip,
    groups: Sequence[tuple[str, Sequence[Sample], bool]],
    setting: Setting,
    batch_size: int,
    workers: int = 0,
    desc: str = "test",
    cache: FeatureCache | None = None,
    max_exact_pixels: int = MAX_EXACT_PIXELS,
    scores_out: dict[str, tuple[np.ndarray, np.ndarray]] | None = None,
    histograms_out: dict[str, np.ndarray] | None = None,
    examples: ExampleSink | None = None,
) -> dict[str, dict[str, Any]]:
    """Metrics of several datasets, scored in at most two passes (with and without masks).

    Pixel metrics are exact (scikit-learn) while the pass has at most ``max_exact_pixels``
    pixels, else binned and streamed (``pixel_method`` says which; the binned error bounds are
    reported beside the metrics).

    Args:
        groups: ``(name, samples, pixel_masks)`` per dataset.
        scores_out: if given, receives ``(image scores, labels)`` per dataset name.
        histograms_out: if given, receives the :class:`PixelHistograms` counts per dataset name
            with masks.
        examples: if given, receives every batch of :func:`predict_samples` (its start indexes
            the samples of the pass: give it with one group).

    Returns:
        The metrics of :func:`evaluate` per dataset name.
    """
    results: dict[str, dict[str, Any]] = {}
    size = model.config.img_size
    for pixel in (True, False):
        chosen = [(name, list(samples)) for name, samples, p in groups if p == pixel]
        if not chosen:
            continue
        everything = [s for _, g in chosen for s in g]
        exact = len(everything) * size * size <= max_exact_pixels
        sink: KeptMaps | StreamedMaps | None = None
        if pixel:
            sink = (
                KeptMaps(len(everything), size)
                if exact
                else StreamedMaps([len(g) for _, g in chosen])
            )
        histograms = (
            PixelHistograms(len(everything)) if pixel and histograms_out is not None else None
        )
        feed = sink if histograms is None else _Both(sink, histograms)
        scores, labels = predict_samples(
            model, everything, setting, batch_size, workers, desc, cache, feed, examples
        )
        start = 0
        for i, (name, samples) in enumerate(chosen):
            part = slice(start, start + len(samples))
            start = part.stop
            if isinstance(sink, KeptMaps):
                pixel_part = pixel_metrics(sink.maps[part], sink.masks[part], max_exact_pixels)
            elif isinstance(sink, StreamedMaps):
                pixel_part = {**sink.accumulators[i].compute(), "pixel_method": "binned"}
            else:
                pixel_part = None
            metrics = compute_metrics(scores[part], labels[part], pixel=pixel_part)
            results[name] = {**metrics, "n_images": len(samples)}
            if scores_out is not None:
                scores_out[name] = (scores[part], labels[part])
            if histograms is not None:
                histograms_out[name] = histograms.counts[part]
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
