"""Frozen-feature cache: hits, keys, corruption, and exactness of cached training/evaluation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from iqeclip.data.datasets import augmented_support
from iqeclip.data.layout import list_split, support_set
from iqeclip.engine.cache import FeatureCache, image_keys, open_cache
from iqeclip.engine.evaluate import evaluate
from iqeclip.engine.trainer import make_optimizer, train_step
from tests.conftest import build_tiny


def test_hits_misses_and_identical_features(tmp_path):
    model = build_tiny()
    cache = FeatureCache(tmp_path, model)
    images = (torch.rand(3, 3, 64, 64) * 255).to(torch.uint8)
    patch, glob = cache.features(images, torch.device("cpu"))
    assert (cache.hits, cache.misses) == (0, 3)
    again = cache.features(images, torch.device("cpu"))
    assert (cache.hits, cache.misses) == (3, 3)
    direct = model.features(images.float() / 255)
    for got, want in zip((patch, glob), direct, strict=True):
        assert torch.equal(got, want)
    assert torch.equal(again[0], patch) and torch.equal(again[1], glob)
    assert "50.0% hit rate" in cache.hit_rate()


def test_keys_follow_content_and_backbone(tmp_path):
    a = (torch.rand(2, 3, 8, 8) * 255).to(torch.uint8)
    b = a.clone()
    b[1, 0, 0, 0] ^= 1
    ka, kb = image_keys(a), image_keys(b)
    assert ka[0] == kb[0] and ka[1] != kb[1]
    assert image_keys(a.float())[0] != ka[0]  # dtype is part of the key
    base = FeatureCache(tmp_path, build_tiny()).dir
    for change in (
        {"img_size": 96},
        {"features_list": [12, 24]},
        {"quick_gelu": True},
        {"normalize": "clip"},
        {"precision": "bf16"},
    ):
        assert FeatureCache(tmp_path, build_tiny(**change)).dir != base, change
    assert FeatureCache(tmp_path, build_tiny(), dtype="fp16").dir != base
    assert FeatureCache(tmp_path, build_tiny(seed=5)).dir == base  # the head does not matter


def test_corrupt_entry_is_recomputed(tmp_path):
    model = build_tiny()
    cache = FeatureCache(tmp_path, model)
    images = (torch.rand(1, 3, 64, 64) * 255).to(torch.uint8)
    good = cache.features(images, torch.device("cpu"))
    cache.flush()  # entries are written on a writer thread
    path = cache._path(image_keys(images)[0])
    size = path.stat().st_size
    assert size == cache.entry_bytes + 4  # the features and their CRC-32
    rng = np.random.default_rng(0)
    for damage in (b"", b"short", rng.bytes(size)):  # empty, truncated, same-size garbage
        path.write_bytes(damage)
        misses = cache.misses
        again = cache.features(images, torch.device("cpu"))
        cache.flush()
        assert cache.misses == misses + 1, damage[:5]
        assert torch.equal(again[0], good[0]) and torch.equal(again[1], good[1])
        assert path.stat().st_size == size  # rewritten
    flipped = bytearray(path.read_bytes())
    flipped[100] ^= 1  # one bit of one feature
    path.write_bytes(bytes(flipped))
    assert torch.equal(cache.features(images, torch.device("cpu"))[0], good[0])
    assert cache.misses == 5


def test_fp16_entries_are_close(tmp_path):
    model = build_tiny()
    images = (torch.rand(2, 3, 64, 64) * 255).to(torch.uint8)
    full = FeatureCache(tmp_path, model).features(images, torch.device("cpu"))
    half = FeatureCache(tmp_path, model, dtype="fp16").features(images, torch.device("cpu"))
    half = FeatureCache(tmp_path, model, dtype="fp16").features(images, torch.device("cpu"))
    torch.testing.assert_close(half[0], full[0], rtol=1e-3, atol=1e-2)


def test_budget_turns_the_cache_off(tmp_path):
    lines = []
    assert open_cache(build_tiny(), 10**9, tmp_path, "fp32", 1.0, lines.append) is None
    assert "feature cache: off (needs" in lines[0]
    assert open_cache(build_tiny(), 10, None, "fp32", 1.0, lines.append) is None
    assert open_cache(build_tiny(), 10, tmp_path, "fp32", 1.0, lines.append) is not None


def test_cached_training_and_evaluation_match_uncached(bench, tmp_path):
    abnormal, normal = support_set(bench, "Brain", 2, 0)
    data = augmented_support(abnormal, normal, 64, segmentation=True)
    batches = [tuple(t[i : i + 8] for t in data.tensors) for i in range(0, 24, 8)]
    runs = {}
    for name, cache in (("plain", None), ("cached", FeatureCache(tmp_path, build_tiny()))):
        model = build_tiny(seed=1)
        opt = make_optimizer(model, 1e-3)
        losses = [train_step(model, opt, b, cache) for _ in range(2) for b in batches]
        test = list_split(bench, "Brain", "test")
        metrics = evaluate(model, test, "few", True, 4, cache=cache)
        runs[name] = (losses, model.head.state_dict(), metrics)
    assert runs["cached"][0] == pytest.approx(runs["plain"][0], rel=1e-6)
    for k, v in runs["plain"][1].items():
        torch.testing.assert_close(runs["cached"][1][k], v, rtol=1e-5, atol=1e-6)
    for k, v in runs["plain"][2].items():
        if isinstance(v, str):
            assert runs["cached"][2][k] == v
        else:
            assert runs["cached"][2][k] == pytest.approx(v, rel=1e-5, abs=1e-6, nan_ok=True), k


def test_half_filled_cache_trains_bit_identical_to_no_cache(bench, tmp_path):
    """A cache filled by an earlier run's first half (other batches) changes nothing."""
    abnormal, normal = support_set(bench, "Brain", 2, 0)
    data = augmented_support(abnormal, normal, 64, segmentation=True)
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(0))
    half = FeatureCache(tmp_path, build_tiny())
    half.features(data.tensors[0][order[:20:3]], torch.device("cpu"))  # odd batch of 7
    batches = [tuple(t[order[i : i + 8]] for t in data.tensors) for i in range(0, 44, 8)]
    runs = {}
    for name, cache in (("plain", None), ("cached", half)):
        model = build_tiny(seed=1)
        opt = make_optimizer(model, 1e-3)
        losses = [train_step(model, opt, b, cache) for _ in range(2) for b in batches]
        runs[name] = (losses, model.head.state_dict())
    assert 0 < half.hits < half.misses + half.hits  # partly filled: hits and misses
    assert runs["cached"][0] == runs["plain"][0]
    for k, v in runs["plain"][1].items():
        assert torch.equal(runs["cached"][1][k], v), k


def test_streamed_pixel_metrics_match_exact(bench):
    model = build_tiny()
    test = list_split(bench, "Liver", "test")
    exact = evaluate(model, test, "zero", True, 4)
    binned = evaluate(model, test, "zero", True, 3, max_exact_pixels=0)
    assert exact["pixel_method"] == "exact" and binned["pixel_method"] == "binned"
    for key in ("pixel_auroc", "pixel_ap", "pixel_aupro"):
        assert abs(binned[key] - exact[key]) <= 1e-4, key
    assert (
        abs(binned["pixel_auroc"] - exact["pixel_auroc"])
        <= binned["pixel_auroc_error_bound"] + 1e-12
    )
    assert binned["image_auroc"] == exact["image_auroc"]
