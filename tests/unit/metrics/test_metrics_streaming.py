"""Tests for the streaming, binned pixel metrics (iqeclip.metrics.streaming and .pixel).

The binned metrics are compared with the exact ones on structured data (smooth noise maps,
blob-shaped masks), with the exact metrics of maps rounded down to the bins (which they must
match to float precision), and with their own error bounds.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import ndimage

from iqeclip.errors import UserError
from iqeclip.metrics import (
    AUPRO_EXACT_MAX_PIXELS,
    MapValueError,
    PixelMetricAccumulator,
    compute_metrics,
    image_auroc,
    pixel_ap,
    pixel_aupro,
    pixel_auroc,
    pixel_metrics,
)

KEYS = ("pixel_auroc", "pixel_ap", "pixel_aupro")


def _blob_data(seed: int, n: int = 40, size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Probability maps and masks: every other image holds 1-3 elliptic blobs; the maps are a
    sigmoid of smooth Gaussian noise plus a smoothed signal inside the blobs."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    masks = np.zeros((n, size, size), dtype=bool)
    for image in range(1, n, 2):
        for _ in range(rng.integers(1, 4)):
            cy, cx = rng.uniform(8, size - 8, size=2)
            ry, rx = rng.uniform(2, 9, size=2)
            masks[image] |= ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
    noise = ndimage.gaussian_filter(rng.normal(size=masks.shape), sigma=(0, 3, 3))
    signal = ndimage.gaussian_filter(masks.astype(np.float64), sigma=(0, 2, 2))
    logits = noise / noise.std() + 3.0 * signal - 1.0
    return (1.0 / (1.0 + np.exp(-logits))).astype(np.float32), masks


def _exact(maps: np.ndarray, masks: np.ndarray) -> dict[str, float]:
    return {
        "pixel_auroc": pixel_auroc(maps, masks),
        "pixel_ap": pixel_ap(maps, masks),
        "pixel_aupro": pixel_aupro(maps, masks),
    }


def _binned(maps, masks, batches: int = 4, **kwargs) -> dict[str, float]:
    acc = PixelMetricAccumulator(**kwargs)
    for part in np.array_split(np.arange(len(maps)), batches):
        acc.update(maps[part], masks[part])
    return acc.compute()


@pytest.fixture(scope="module")
def blobs() -> tuple[np.ndarray, np.ndarray, dict[str, float]]:
    maps, masks = _blob_data(0)
    return maps, masks, _exact(maps, masks)


# ----------------------------------------------------------------------------------------------
# Accuracy
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1])
def test_binned_metrics_match_the_exact_ones_with_default_bins(seed: int) -> None:
    maps, masks = _blob_data(seed)
    exact = _exact(maps, masks)
    binned = _binned(maps, masks, batches=4)
    for key in KEYS:
        deviation = abs(binned[key] - exact[key])
        assert deviation <= 1e-4
        assert deviation <= binned[f"{key}_error_bound"]
        assert binned[f"{key}_error_bound"] <= 1e-4  # the bounds are tight too
    # Measured on these data: deviations <= 1.4e-6, bounds <= 6e-6 (see the module docstring).


@pytest.mark.parametrize("bins", [4, 16, 256, 4096])
def test_binned_metrics_equal_the_exact_metrics_of_maps_rounded_to_the_bins(
    bins: int, blobs
) -> None:
    # Thresholds at the bin edges and ties within bins: the binned metrics are the exact
    # metrics of the maps rounded down to their bin, and within the bounds of the exact metrics
    # of the unrounded maps, even with very coarse bins.
    maps, masks, exact = blobs
    binned = _binned(maps, masks, bins=bins)
    rounded = np.floor(maps.astype(np.float64) * bins).clip(0, bins - 1).astype(np.float32)
    for key, value in _exact(rounded, masks).items():
        assert binned[key] == pytest.approx(value, abs=1e-12)
        assert abs(binned[key] - exact[key]) <= binned[f"{key}_error_bound"] + 1e-12


@pytest.mark.parametrize("seed", range(20))
def test_error_bounds_hold_on_small_adversarial_inputs(seed: int) -> None:
    # Few pixels, few bins, many ties and mixed bins: the bounds are attained or nearly so.
    rng = np.random.default_rng(seed)
    masks = rng.random((3, 5, 4)) < 0.3
    masks[0, 0, 0], masks[0, 0, 1] = True, False
    maps = (rng.random(masks.shape) + 0.3 * masks) / 1.3
    if seed % 2:
        maps = np.round(maps, 1)
    maps = maps.astype(np.float32)
    exact = _exact(maps, masks)
    binned = _binned(maps, masks, batches=2, bins=int(rng.integers(1, 6)))
    for key in KEYS:
        assert abs(binned[key] - exact[key]) <= binned[f"{key}_error_bound"] + 1e-12


def test_scores_on_bin_centres_give_the_exact_metrics() -> None:
    # Scores constant within each bin: the ties the binning makes are real ties, so all three
    # metrics are exact (the AUROC bound is still positive: bins hold both classes).
    bins = 2**20
    maps, masks = _blob_data(2)
    centres = ((np.floor(maps.astype(np.float64) * 64) * 2**14 + 0.5) / bins).astype(np.float32)
    exact = _exact(centres, masks)
    binned = _binned(centres, masks, bins=bins)
    for key in KEYS:
        assert binned[key] == pytest.approx(exact[key], abs=1e-12)
    assert binned["pixel_auroc_error_bound"] > 0


def test_auroc_bound_is_zero_when_no_bin_holds_both_classes() -> None:
    # Anomalous pixels on even bin centres, normal pixels on odd ones, classes overlapping.
    bins = 2**20
    rng = np.random.default_rng(3)
    masks = rng.random((6, 16, 16)) < 0.2
    index = 2 * rng.integers(0, bins // 2, size=masks.shape) + ~masks
    maps = ((index + 0.5) / bins).astype(np.float32)
    binned = _binned(maps, masks, bins=bins)
    assert binned["pixel_auroc_error_bound"] == 0.0
    assert binned["pixel_auroc"] == pytest.approx(pixel_auroc(maps, masks), abs=1e-12)
    assert 0.3 < binned["pixel_auroc"] < 0.7


def test_perfect_maps_give_perfect_binned_metrics() -> None:
    _, masks = _blob_data(4, n=6)
    maps = np.where(masks, 0.9, 0.1).astype(np.float32)
    binned = _binned(maps, masks, bins=16)
    assert binned["pixel_auroc"] == binned["pixel_ap"] == 1.0
    assert binned["pixel_aupro"] == pytest.approx(1.0, abs=1e-12)  # float sums of PRO weights
    assert binned["pixel_auroc_error_bound"] == binned["pixel_ap_error_bound"] == 0.0


def test_fpr_limit_is_used_for_the_aupro(blobs) -> None:
    maps, masks, _ = blobs
    binned = _binned(maps, masks, fpr_limit=0.05)
    assert binned["pixel_aupro"] == pytest.approx(
        pixel_aupro(maps, masks, fpr_limit=0.05), abs=1e-4
    )


# ----------------------------------------------------------------------------------------------
# Batching and inputs
# ----------------------------------------------------------------------------------------------


def test_results_do_not_depend_on_the_batches(blobs) -> None:
    maps, masks, _ = blobs
    reference = _binned(maps, masks, batches=1)
    for batches in (3, 7, 40):
        result = _binned(maps, masks, batches=batches)
        assert result["pixel_auroc"] == reference["pixel_auroc"]  # integer histograms
        assert result["pixel_ap"] == reference["pixel_ap"]
        assert result == pytest.approx(reference, abs=1e-12)  # PRO weights: float sums
    # Images in another order, and an empty batch.
    order = np.random.default_rng(0).permutation(len(maps))
    acc = PixelMetricAccumulator()
    acc.update(maps[:0], masks[:0])
    for part in np.array_split(order, 5):
        acc.update(maps[part], masks[part])
    assert acc.compute() == pytest.approx(reference, abs=1e-12)


def test_compute_leaves_the_accumulator_unchanged(blobs) -> None:
    maps, masks, _ = blobs
    acc = PixelMetricAccumulator()
    acc.update(maps[:20], masks[:20])
    acc.compute()
    acc.update(maps[20:], masks[20:])
    assert acc.compute() == _binned(maps, masks, batches=1)


def test_torch_and_numpy_inputs_give_the_same_result(blobs) -> None:
    maps, masks, _ = blobs
    expected = _binned(maps, masks, batches=2)
    for tensor_maps in (torch.from_numpy(maps), torch.from_numpy(maps.astype(np.float64))):
        acc = PixelMetricAccumulator()
        for part in np.array_split(np.arange(len(maps)), 2):
            acc.update(tensor_maps[part], torch.from_numpy(masks[part]))
        assert acc.compute() == expected
    # Float64 numpy maps and 0/1 integer masks are converted the same way.
    assert _binned(maps.astype(np.float64), masks.astype(np.uint8), batches=2) == expected


def test_values_within_the_tolerance_are_clipped() -> None:
    maps = np.array([[[0.2, 0.7], [1.0, 0.0]]], dtype=np.float32)
    masks = np.array([[[False, True], [True, False]]])
    nudged = maps + np.array([[[0, 0], [5e-7, -5e-7]]], dtype=np.float32)
    assert _binned(nudged, masks, batches=1, bins=8) == _binned(maps, masks, batches=1, bins=8)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (1.01, "found the value 1.01"),
        (-0.5, "found the value -0.5"),
        (1.0 + 1e-5, "must lie in \\[0, 1\\]"),
        (np.inf, "found the value inf"),
        (np.nan, "NaN"),
    ],
)
def test_out_of_range_and_nan_values_raise(value: float, message: str) -> None:
    maps = np.full((2, 3, 3), 0.5, dtype=np.float32)
    maps[1, 2, 0] = value
    acc = PixelMetricAccumulator()
    for error in (ValueError, UserError, MapValueError):
        with pytest.raises(error, match=message) as info:
            acc.update(maps, np.zeros(maps.shape, dtype=bool))
        assert "\n" not in str(info.value)
    with pytest.raises(ValueError, match=message):
        acc.update(torch.from_numpy(maps), torch.zeros(maps.shape, dtype=torch.bool))


def test_custom_range() -> None:
    maps, masks = _blob_data(1, n=10)
    logits = np.log(maps / (1 - maps)).astype(np.float32)  # same order, range about [-6, 6]
    binned = _binned(logits, masks, lo=-20.0, hi=20.0, bins=2**18)
    for key, value in _exact(logits, masks).items():
        assert binned[key] == pytest.approx(value, abs=1e-4)
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        PixelMetricAccumulator(lo=-1.0, hi=1.0).update(logits, masks)


def test_bad_inputs_and_parameters_raise() -> None:
    maps, masks = _blob_data(0, n=2, size=24)
    acc = PixelMetricAccumulator(bins=8)
    with pytest.raises(UserError, match="same shape"):
        acc.update(maps, masks[:, :4])
    with pytest.raises(UserError, match=r"\(B, H, W\)"):
        acc.update(maps[0], masks[0])
    with pytest.raises(UserError, match="found the value 2"):
        acc.update(maps, masks * 2)
    for kwargs in ({"bins": 0}, {"bins": 2.5}, {"lo": 1.0, "hi": 1.0}, {"hi": np.inf}):
        with pytest.raises(UserError):
            PixelMetricAccumulator(**kwargs)
    with pytest.raises(UserError, match="FPR limit"):
        PixelMetricAccumulator(fpr_limit=0.0)


def test_compute_needs_both_classes() -> None:
    acc = PixelMetricAccumulator(bins=8)
    with pytest.raises(UserError, match="maps are empty"):
        acc.compute()
    acc.update(np.full((1, 4, 4), 0.3), np.zeros((1, 4, 4), dtype=bool))
    with pytest.raises(UserError, match="no anomalous pixel"):
        acc.compute()
    acc = PixelMetricAccumulator(bins=8)
    acc.update(np.full((1, 4, 4), 0.3), np.ones((1, 4, 4), dtype=bool))
    with pytest.raises(UserError, match="no normal pixel"):
        acc.compute()


def test_memory_does_not_grow_with_the_number_of_pixels() -> None:
    bins = 1024
    acc = PixelMetricAccumulator(bins=bins)
    rng = np.random.default_rng(0)
    for _ in range(16):  # 16 x 62,500 = 1e6 normal pixels
        acc.update(rng.random((4, 125, 125), dtype=np.float32), np.zeros((4, 125, 125), bool))
    masks = np.zeros((4, 125, 125), dtype=bool)
    masks[:, 10:60, 10:60] = True  # and 10,000 anomalous pixels
    acc.update(rng.random(masks.shape, dtype=np.float32), masks)
    held = 0
    for value in vars(acc).values():
        assert not isinstance(value, (list, tuple, dict))
        if isinstance(value, np.ndarray):
            assert value.size <= bins
            held += value.nbytes
    assert held <= 3 * 8 * bins
    assert acc.compute()["pixel_auroc"] == pytest.approx(0.5, abs=0.02)


# ----------------------------------------------------------------------------------------------
# pixel_metrics and compute_metrics
# ----------------------------------------------------------------------------------------------


def test_pixel_metrics_exact_below_the_limit(blobs) -> None:
    maps, masks, exact = blobs
    result = pixel_metrics(maps, masks, max_exact_pixels=maps.size)
    assert result["pixel_method"] == "exact"
    assert {k: result[k] for k in KEYS} == exact
    assert result["pixel_auroc_error_bound"] == result["pixel_ap_error_bound"] == 0.0
    assert result["pixel_aupro_error_bound"] == 0.0
    assert maps.size <= AUPRO_EXACT_MAX_PIXELS


def test_pixel_metrics_binned_above_the_limit(blobs) -> None:
    maps, masks, exact = blobs
    result = pixel_metrics(torch.from_numpy(maps), masks, max_exact_pixels=maps.size - 1)
    assert result["pixel_method"] == "binned"
    for key in KEYS:
        assert abs(result[key] - exact[key]) <= min(1e-4, result[f"{key}_error_bound"])
    # The bins span the maps' own range, so maps outside [0, 1] work too.
    shifted = pixel_metrics(5.0 * maps - 2.0, masks, max_exact_pixels=0)
    for key in KEYS:
        assert shifted[key] == pytest.approx(exact[key], abs=1e-4)
    constant = pixel_metrics(np.full(maps.shape, 3.0), masks, max_exact_pixels=0)
    assert constant["pixel_auroc"] == 0.5


def test_compute_metrics_takes_precomputed_pixel_metrics(blobs) -> None:
    maps, masks, exact = blobs
    scores = maps.reshape(len(maps), -1).max(axis=1)
    labels = masks.any(axis=(1, 2))
    pixel = pixel_metrics(maps, masks, max_exact_pixels=0)
    result = compute_metrics(scores, labels, pixel=pixel)
    assert result["image_auroc"] == image_auroc(scores, labels)
    assert {k: result[k] for k in pixel} == pixel
    assert compute_metrics(scores, labels, maps, masks) == {
        **compute_metrics(scores, labels),
        **exact,
    }
    with pytest.raises(ValueError, match="not both"):
        compute_metrics(scores, labels, maps, masks, pixel=pixel)
    with pytest.raises(ValueError, match="lack pixel_aupro"):
        compute_metrics(scores, labels, pixel={"pixel_auroc": 0.5, "pixel_ap": 0.5})
    assert not math.isnan(result["pixel_aupro"])
