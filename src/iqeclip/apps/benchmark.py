"""``iqeclip benchmark``: speed of the test path and of training steps, as ratios to the bare
backbone forward measured in the same run.

Beside the ratios: the backbone's FLOPs per image and the GFLOP/s it achieved, and the
per-image breakdown of the test path (backbone, text, IQM, maps, blur, the rest of the head,
metrics, data; :mod:`iqeclip.apps.breakdown`).

With ``--backend onnx`` the model is also exported (:mod:`iqeclip.inference.export`) and
onnxruntime's scoring of the same batch is timed in the same rounds, with as many threads as
torch uses: ``onnx_over_inference`` is its time over the PyTorch inference path's, and
``onnx_max_map_deviation`` the largest difference of its maps from PyTorch's.

The ``pipeline`` figure is ``predict`` end to end (reading the files, scoring, writing the
overlay, map and ``.npy`` of each) on ``n_images`` generated 512 x 512 PNG scans, as images per
second over the model's own throughput on the same images already read, both in the same run:
``pipeline_over_model`` with ``--workers`` reader processes, and ``pipeline_over_model_workers_0``
reading in the main process (:func:`pipeline`).

The machine this runs on may be shared and noisy, so every quantity is measured in interleaved
rounds (backbone, inference, uncached step, cached step, then again) and the median per image is
reported; the ratios are the figures to compare, the absolute times only context. With
``--precision bf16`` (or fp16) the largest absolute difference of the anomaly maps from an fp32
backbone with the same head is reported too.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import resource
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from iqeclip.apps.breakdown import backbone_flops, breakdown
from iqeclip.config import BENCH_MODEL, BenchmarkConfig, ModelConfig
from iqeclip.engine.cache import FeatureCache
from iqeclip.engine.stream import stream
from iqeclip.engine.trainer import make_optimizer, make_scaler, train_step
from iqeclip.errors import UserError, param
from iqeclip.inference.detectors import OnnxDetector
from iqeclip.inference.export import export_onnx
from iqeclip.model.detector import IQEClip
from iqeclip.runtime.device import resolve_device, seed_everything

PIPELINE_SIDE = 512  # the generated scans of the pipeline figure, pixels


def _timed(fn: Callable[[], object], device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def _training_batch(batch_size: int, size: int) -> tuple[torch.Tensor, ...]:
    """Random images, half of them with a square lesion: ``(images, masks, labels, valid)``."""
    images = torch.rand(batch_size, 3, size, size)
    masks = torch.zeros(batch_size, size, size, dtype=torch.bool)
    masks[batch_size // 2 :, size // 4 : size // 2, size // 4 : size // 2] = True
    labels = (torch.arange(batch_size) >= batch_size // 2).long()
    return images, masks, labels, torch.ones(batch_size, dtype=torch.bool)


def _deviation_from_fp32(
    model: IQEClip, config: ModelConfig, images: torch.Tensor, dev: torch.device
) -> float | None:
    """The largest map difference of a bf16/fp16 backbone from the same model in fp32."""
    if model.config.precision == "fp32":
        return None
    reference = IQEClip.build(dataclasses.replace(config, precision="fp32"), dev)
    reference.head.load_state_dict(model.head.state_dict())
    low, _ = model.predict(images.to(dev), "zero")
    full, _ = reference.predict(images.to(dev), "zero")
    return float((low - full).abs().max())


def _with_onnx(
    model: IQEClip,
    images: torch.Tensor,
    dev: torch.device,
    path: Path,
    work: dict[str, Callable[[], Any]],
) -> tuple[OnnxDetector, dict[str, Any]]:
    """The model exported to ``path`` and loaded with onnxruntime, its timing added to
    ``work``, and how far its maps are from PyTorch's."""
    onnx = _onnx_detector(model, path)
    reference, _ = model.predict(images.to(dev), "zero")
    mine, _ = onnx.predict(images, "zero")
    work["onnx"] = lambda: onnx.predict(images, "zero")
    return onnx, {
        "onnx_max_map_deviation": float((mine - reference.cpu()).abs().max()),
        "onnx_threads": onnx.session.get_session_options().intra_op_num_threads,
    }


def benchmark(
    config: ModelConfig,
    batch_size: int,
    n_images: int,
    device: str = "auto",
    seed: int = 0,
    backend: str = "torch",
    workers: int = 2,
) -> dict:
    """Measure and return the figures (see the module docstring)."""
    dev = resolve_device(device)
    if backend == "onnx" and (dev.type != "cpu" or config.precision != "fp32"):
        raise UserError(
            f"benchmark {param('backend')} onnx compares both backends on the CPU in fp32"
        )
    seed_everything(seed)
    model = IQEClip.build(config, dev)
    size = model.config.img_size
    batch = _training_batch(batch_size, size)
    images, masks, labels, _ = batch
    deviation = _deviation_from_fp32(model, config, images, dev)
    optimizer, scaler = make_optimizer(model, 1e-4), make_scaler(model)
    visual_input = images.to(dev, model.backbone.dtype)
    with tempfile.TemporaryDirectory() as tmp:
        cache = FeatureCache(tmp, model)
        cache.features(images, dev)  # warm: the cached step reads every entry from disk
        cache.flush()
        work = {
            "backbone": lambda: torch.no_grad()(model.backbone.visual)(visual_input),
            "inference": lambda: model.predict(images.to(dev), "zero"),
            "train_uncached": lambda: train_step(model, optimizer, batch, scaler=scaler),
            "train_cached": lambda: train_step(model, optimizer, batch, cache, scaler=scaler),
        }
        onnx, extra = None, {}
        if backend == "onnx":  # exported before training steps change the head
            onnx, extra = _with_onnx(model, images, dev, Path(tmp) / "model.onnx", work)
        for fn in work.values():  # warm-up round
            _timed(fn, dev)
        times: dict[str, list[float]] = {k: [] for k in work}
        for _ in range(max(1, n_images // batch_size)):
            for name, fn in work.items():
                times[name].append(_timed(fn, dev))
    ms = {k: 1000 * statistics.median(v) / batch_size for k, v in times.items()}
    flops = backbone_flops(model, images)
    parts = breakdown(model, images, masks, labels, len(times["backbone"]))
    if onnx is not None:
        extra = {
            "onnx_ms_per_image": round(ms["onnx"], 2),
            "onnx_over_inference": round(ms["onnx"] / ms["inference"], 3),
            **extra,
        }
    flow = pipeline(model, n_images, batch_size, workers, seed)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "model_name": model.config.model_name,
        "img_size": size,
        "batch_size": batch_size,
        "precision": model.config.precision,
        "device": str(dev),
        "rounds": len(times["backbone"]),
        "backbone_ms_per_image": round(ms["backbone"], 2),
        "backbone_gflop_per_image": round(flops / 1e9, 3),
        "backbone_gflops_per_s": round(flops / 1e9 / (ms["backbone"] / 1000), 1),
        "inference_ms_per_image": round(ms["inference"], 2),
        "inference_over_backbone": round(ms["inference"] / ms["backbone"], 3),
        "train_ms_per_image_uncached": round(ms["train_uncached"], 2),
        "train_ms_per_image_cached": round(ms["train_cached"], 2),
        "train_uncached_over_backbone": round(ms["train_uncached"] / ms["backbone"], 3),
        "train_cached_over_backbone": round(ms["train_cached"] / ms["backbone"], 3),
        "breakdown_ms_per_image": parts,
        "max_map_deviation_from_fp32": deviation,
        **flow,
        **extra,
        "peak_rss_mb": round(peak, 1),
        "peak_gpu_mb": (
            round(torch.cuda.max_memory_allocated(dev) / 2**20, 1) if dev.type == "cuda" else None
        ),
        "torch_threads": torch.get_num_threads(),
    }


def pipeline(model: IQEClip, n_images: int, batch_size: int, workers: int, seed: int) -> dict:
    """End-to-end ``predict`` throughput over model-only throughput on the same PNG files.

    The files are scans of the synthetic benchmark's modalities rendered at 512 x 512. Model-only
    is ``model.predict`` on the inputs already read (uint8 batches, as predict hands them over);
    end to end is :func:`~iqeclip.inference.predict.predict` with its default outputs, the model
    already loaded, with ``workers`` reader processes and with none. The three are timed in two
    interleaved rounds and the faster round of each is kept.
    """
    from iqeclip.data.items import read_items
    from iqeclip.data.readers import DEFAULT_READING
    from iqeclip.data.synth import _RENDERERS
    from iqeclip.inference.predict import predict

    rng = np.random.default_rng(seed)
    modalities = ("Brain", "Liver", "Chest")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "scans"
        folder.mkdir()
        for i in range(n_images):
            picture, _ = _RENDERERS[modalities[i % 3]](rng, PIPELINE_SIDE, False)
            Image.fromarray(picture).save(folder / f"{i:05d}.png")
        files = sorted(folder.iterdir())
        size = model.config.img_size
        inputs = torch.stack(
            [item.model_input for f in files for item in read_items(f, size, DEFAULT_READING)]
        )
        batches = inputs.split(batch_size)

        def model_only() -> None:  # the scoring stream, without reading or writing
            for _ in stream(model, ((batch, None) for batch in batches), "zero"):
                pass

        def end_to_end(n: int, name: str) -> Callable[[], None]:
            out = Path(tmp) / name  # a fresh folder per timed run
            return lambda: predict(
                "benchmark", [folder], out, detector=model, batch_size=batch_size, workers=n
            )

        quiet = logging.getLogger("iqeclip.inference.predict")
        quiet.disabled = True
        try:
            model_only()  # warm-up
            seconds: dict[str, list[float]] = {"model": [], "workers": [], "workers_0": []}
            for round_ in range(2):
                seconds["model"].append(_timed(model_only, model.device))
                for name, n in (("workers", workers), ("workers_0", 0)):
                    run = end_to_end(n, f"{name}-{round_}")
                    seconds[name].append(_timed(run, model.device))
        finally:
            quiet.disabled = False
    rate = {k: n_images / min(v) for k, v in seconds.items()}
    return {
        "pipeline_images": n_images,
        "pipeline_image_side": PIPELINE_SIDE,
        "pipeline_workers": workers,
        "pipeline_model_images_per_s": round(rate["model"], 2),
        "pipeline_images_per_s": round(rate["workers"], 2),
        "pipeline_over_model": round(rate["workers"] / rate["model"], 3),
        "pipeline_over_model_workers_0": round(rate["workers_0"] / rate["model"], 3),
    }


def _onnx_detector(model: IQEClip, path: Path) -> OnnxDetector:
    """The model exported to ``path`` (traced on the CPU in fp32), run by onnxruntime."""
    export_onnx(model, path)
    return OnnxDetector(path, "cpu", threads=torch.get_num_threads())


def run_benchmark(model_overrides: dict[str, Any], cfg: BenchmarkConfig) -> dict:
    """``iqeclip benchmark``: measure, print the result as one JSON line and return it."""
    config = ModelConfig(**{**BENCH_MODEL, **model_overrides})
    result = benchmark(
        config, cfg.batch_size, cfg.n_images, cfg.device, cfg.seed, cfg.backend, cfg.workers
    )
    print(json.dumps(result))
    return result
