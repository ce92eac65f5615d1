"""Where the time of one test image goes, and how close the backbone runs to the machine's limit.

:func:`backbone_flops` counts the floating-point operations of the frozen vision tower's forward
(``torch.utils.flop_counter``: 2 per multiply-add of every matrix product and convolution,
the attention products included); with
the measured backbone time this gives the achieved GFLOP/s. :func:`breakdown` splits the
inference path of a batch into its parts, per image: the vision tower and the IQM (timed by
forward hooks while ``predict`` runs; the backbone figure is the whole frozen visual path, taps
and global embedding), the prompted text tower, the maps and the blur (the head's text pass and
the scoring functions called on the batch's features and logits), the rest of the head, and
beside the model the metrics of the batch and the reading of one PNG per image from disk
(``data``).
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.flop_counter import FlopCounterMode

from iqeclip.data.readers import load_image
from iqeclip.metrics import compute_metrics
from iqeclip.model.backbone import plain_attention
from iqeclip.model.detector import IQEClip
from iqeclip.model.scoring import gaussian_blur, probability_maps

DATA_SIDE = 512  # the PNGs read for the ``data`` figure: real-size scans, not model-size ones


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def backbone_flops(model: IQEClip, images: torch.Tensor) -> int:
    """Floating-point operations of the vision tower's forward per image (attention counted op by
    op: the fused kernels are invisible to the counter; a ``meta`` model counts without running)."""
    visual = model.backbone.visual
    with torch.no_grad(), plain_attention(), FlopCounterMode(display=False) as counter:
        visual(images.to(model.device, model.backbone.dtype))
    return counter.get_total_flops() // len(images)


def _hooked(
    modules: dict[str, list[torch.nn.Module]], device: torch.device
) -> tuple[dict[str, float], list]:
    """Forward hooks adding the time (seconds) of each name's modules to the returned totals."""
    totals = {name: 0.0 for name in modules}
    handles = []
    for name, module in ((n, m) for n, ms in modules.items() for m in ms):
        started: list[float] = []

        def pre(_m, _a, started=started):
            _sync(device)
            started.append(time.perf_counter())

        def post(_m, _a, _o, name=name, started=started):
            _sync(device)
            totals[name] += time.perf_counter() - started.pop()

        handles += [module.register_forward_pre_hook(pre), module.register_forward_hook(post)]
    return totals, handles


def _median_ms(fn: Callable[[], object], device: torch.device, rounds: int, per: int) -> float:
    times = []
    for _ in range(rounds):
        _sync(device)
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times) / per


def breakdown(
    model: IQEClip, images: torch.Tensor, masks: torch.Tensor, labels: torch.Tensor, rounds: int
) -> dict[str, float]:
    """Milliseconds per image of each part of the test path (see the module docstring)."""
    device, batch = model.device, len(images)
    size = model.config.img_size
    inputs = images.to(device)
    parts = {"backbone": [model.backbone], "iqm": [model.head.iqm]}
    model.predict(inputs, "zero")  # warm-up
    totals, handles = _hooked(parts, device)
    try:
        inference = _median_ms(lambda: model.predict(inputs, "zero"), device, rounds, batch)
    finally:
        for handle in handles:
            handle.remove()
    result = {name: 1000 * total / rounds / batch for name, total in totals.items()}
    with torch.no_grad():
        patches, glob = model.features(inputs)
        logits = model.logits(patches, glob)
        maps = probability_maps(logits.query, size).mean(dim=0)
    with torch.no_grad(), model.autocast():  # the text pass as the head runs it
        result["text"] = _median_ms(
            lambda: model.head.text_embeddings(glob, model.backbone.text), device, rounds, batch
        )
    result["maps"] = _median_ms(
        lambda: (probability_maps(logits.query, size), probability_maps(logits.text, size)),
        device,
        rounds,
        batch,
    )
    result["blur"] = _median_ms(lambda: gaussian_blur(maps), device, rounds, batch)
    result["head_other"] = max(0.0, inference - sum(result.values()))
    if len(labels.unique()) == 2:  # image AUROC needs both classes in the batch
        scores = maps.mean(dim=(1, 2)).cpu().numpy()
        numpy_maps, numpy_masks = maps.cpu().numpy(), masks.numpy()
        result["metrics"] = _median_ms(
            lambda: compute_metrics(scores, labels.numpy(), numpy_maps, numpy_masks),
            device,
            rounds,
            batch,
        )
    with tempfile.TemporaryDirectory() as tmp:
        files = []
        rng = np.random.default_rng(0)
        for i in range(batch):
            files.append(Path(tmp) / f"{i}.png")
            noise = rng.integers(0, 256, (DATA_SIDE, DATA_SIDE), dtype=np.uint8)
            Image.fromarray(noise).save(files[-1])
        result["data"] = _median_ms(
            lambda: [load_image(f, size) for f in files], device, rounds, batch
        )
    return {name: round(value, 3) for name, value in result.items()}
