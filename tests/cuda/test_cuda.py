"""The GPU path: mixed precision (fp16 autocast with a loss scaler, bf16) in training and
testing, the feature cache and predict on CUDA. Marked ``cuda``: skipped without a GPU;
``scripts/gpu_check.sh`` runs them.

Tolerance: the anomaly maps are probabilities in [0, 1]; a low-precision model (backbone cast to
the dtype, head under autocast) gives maps within :data:`MAP_TOLERANCE` of the fp32 model with
the same weights."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
from PIL import Image

from iqeclip.config import ModelConfig
from iqeclip.engine.cache import FeatureCache
from iqeclip.engine.trainer import make_optimizer, make_scaler, train_step
from iqeclip.inference.predict import predict
from iqeclip.model.detector import IQEClip
from tests.conftest import TINY, build_tiny

pytestmark = pytest.mark.cuda

MAP_TOLERANCE = {"bf16": 2e-2, "fp16": 5e-3}
CUDA = torch.device("cuda")


def _batch(n: int = 4, size: int = 64):
    generator = torch.Generator().manual_seed(0)
    images = (torch.rand(n, 3, size, size, generator=generator) * 255).to(torch.uint8)
    masks = torch.zeros(n, size, size, dtype=torch.bool)
    masks[n // 2 :, 16:40, 16:40] = True
    labels = (torch.arange(n) >= n // 2).long()
    return images, masks, labels, torch.ones(n, dtype=torch.bool)


def _on_cuda(precision: str):
    """A low-precision model on CUDA and the fp32 model with the same weights."""
    reference = build_tiny(device="cuda")
    model = IQEClip.build(ModelConfig(**{**TINY, "precision": precision}), device="cuda")
    model.load_state_dict(reference.state_dict())  # copied into each parameter's own dtype
    return model, reference


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_low_precision_maps_stay_close_to_fp32(precision):
    model, reference = _on_cuda(precision)
    images = _batch()[0].float().div(255).to(CUDA)
    low, low_scores = model.predict(images, "zero")
    full, _ = reference.predict(images, "zero")
    assert low.dtype == full.dtype == torch.float32
    assert (low - full).abs().max().item() < MAP_TOLERANCE[precision]
    assert torch.isfinite(low_scores).all()


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_low_precision_training_learns_like_fp32(precision):
    model, reference = _on_cuda(precision)
    batch = _batch()
    losses = {}
    for name, m in (("low", model), ("fp32", reference)):
        optimizer, scaler = make_optimizer(m, 1e-3), make_scaler(m)
        assert scaler.is_enabled() == (m.config.precision == "fp16")
        losses[name] = [train_step(m, optimizer, batch, scaler=scaler) for _ in range(6)]
    assert all(np.isfinite(losses["low"]))
    assert losses["low"][-1] < losses["low"][0]  # it learns
    np.testing.assert_allclose(losses["low"][0], losses["fp32"][0], rtol=5e-2)
    after = {k: v.float() for k, v in model.head.state_dict().items()}
    assert all(torch.isfinite(v).all() for v in after.values())


def test_feature_cache_on_cuda_gives_the_direct_features(tmp_path):
    model = build_tiny(device="cuda")
    images = _batch()[0]
    cache = FeatureCache(tmp_path, model)
    first = cache.features(images, CUDA)
    cache.flush()
    again = cache.features(images, CUDA)
    direct = model.features(images.float().div(255).to(CUDA))
    assert cache.hits == len(images) and again[0].device.type == "cuda"
    for a, b, c in zip(first, again, direct, strict=True):
        assert torch.equal(a, b) and torch.allclose(b, c, atol=1e-6)


def test_predict_on_cuda_with_workers_scores_like_the_cpu(tmp_path):
    rng = np.random.default_rng(0)
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(6):
        Image.fromarray((rng.random((80, 72)) * 255).astype(np.uint8)).save(folder / f"{i}.png")
    scores = {}
    for device in ("cuda", "cpu"):
        model = build_tiny(device=device)
        out = tmp_path / device
        predict("tiny", [folder], out, detector=model, batch_size=4, workers=2)
        with open(out / "predictions.csv", newline="") as f:
            scores[device] = [float(r["score"]) for r in csv.DictReader(f)]
    np.testing.assert_allclose(scores["cuda"], scores["cpu"], atol=1e-4)
