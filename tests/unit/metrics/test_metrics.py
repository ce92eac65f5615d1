"""Tests for the exact metrics: iqeclip.metrics.image, .pixel, .aupro and .compute.

The scikit-learn based metrics are compared with direct scikit-learn calls; F1-max with a brute
force loop; AUPRO with small hand-made cases whose values are derived in the comments, and with
scikit-learn's ROC curve in the special case where PRO equals the true positive rate.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy import ndimage
from sklearn.metrics import average_precision_score, roc_auc_score

from iqeclip.errors import UserError
from iqeclip.metrics import aupro
from iqeclip.metrics.aupro import pixel_aupro
from iqeclip.metrics.compute import compute_metrics
from iqeclip.metrics.image import f1_max, image_ap, image_auroc
from iqeclip.metrics.pixel import pixel_ap, pixel_auroc

SEEDS = [0, 1, 2, 3, 4]


def _image_data(seed: int, n: int = 60) -> tuple[np.ndarray, np.ndarray]:
    """Random scores (with ties on even seeds) and labels holding both classes."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, size=n)
    labels[:2] = [0, 1]
    scores = rng.normal(size=n) + labels * 0.8
    if seed % 2 == 0:
        scores = np.round(scores, 1)  # many ties, some across the two classes
    return scores, labels


def _noisy_maps(
    rng: np.random.Generator, masks: np.ndarray, signal: float, seed: int
) -> np.ndarray:
    """Uniform noise plus ``signal`` inside the masks, rounded to 0.1 (many ties) on even seeds."""
    maps = rng.random(masks.shape) + signal * masks
    if seed % 2 == 0:
        maps = np.round(maps, 1)
    return maps


def _pixel_data(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Random maps (with ties on even seeds) and masks: random blobs plus one normal image."""
    rng = np.random.default_rng(seed)
    masks = rng.random((5, 12, 10)) < 0.15
    masks[0] = False  # a normal image
    masks[1, 2:5, 3:6] = True  # make sure there is an anomaly
    return _noisy_maps(rng, masks, 0.5, seed), masks


# ----------------------------------------------------------------------------------------------
# Image level
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", SEEDS)
def test_image_auroc_and_ap_match_sklearn(seed: int) -> None:
    scores, labels = _image_data(seed)
    assert image_auroc(scores, labels) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    assert image_ap(scores, labels) == pytest.approx(
        average_precision_score(labels, scores), abs=1e-12
    )


def _f1_max_brute_force(scores: np.ndarray, labels: np.ndarray) -> float:
    best = 0.0
    for threshold in np.unique(scores):
        predicted = scores >= threshold
        tp = int(np.sum(predicted & (labels == 1)))
        fp = int(np.sum(predicted & (labels == 0)))
        fn = int(np.sum(~predicted & (labels == 1)))
        f1 = 2 * tp / (2 * tp + fp + fn) if tp else 0.0
        best = max(best, f1)
    return best


@pytest.mark.parametrize("seed", SEEDS)
def test_f1_max_matches_brute_force(seed: int) -> None:
    scores, labels = _image_data(seed)
    assert f1_max(scores, labels) == pytest.approx(_f1_max_brute_force(scores, labels), abs=1e-12)


def test_f1_max_hand_cases() -> None:
    # Perfect separation: the threshold 0.8 catches both positives and nothing else.
    assert f1_max([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1]) == pytest.approx(1.0)
    # Reversed ranking: the best threshold is the lowest (everything positive):
    # P = 2/4, R = 1, F1 = 2 * 0.5 * 1 / 1.5 = 2/3. Higher thresholds catch negatives first.
    assert f1_max([0.9, 0.8, 0.2, 0.1], [0, 0, 1, 1]) == pytest.approx(2 / 3)


def test_image_metrics_accept_bool_labels_and_lists() -> None:
    scores, labels = _image_data(1)
    expected = roc_auc_score(labels, scores)
    assert image_auroc(list(scores), labels.astype(bool)) == pytest.approx(expected)


# ----------------------------------------------------------------------------------------------
# Pixel AUROC / AP
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", SEEDS)
def test_pixel_auroc_and_ap_match_sklearn_on_flattened(seed: int) -> None:
    maps, masks = _pixel_data(seed)
    flat_maps = maps.astype(np.float32).ravel()
    flat_masks = masks.ravel()
    # float64 maps and 0/1 integer masks are accepted and give the same numbers.
    for m, k in [(maps, masks), (maps.astype(np.float32), masks.astype(np.uint8))]:
        assert pixel_auroc(m, k) == pytest.approx(roc_auc_score(flat_masks, flat_maps), abs=1e-12)
        assert pixel_ap(m, k) == pytest.approx(
            average_precision_score(flat_masks, flat_maps), abs=1e-12
        )


# ----------------------------------------------------------------------------------------------
# AUPRO, hand-made cases
# ----------------------------------------------------------------------------------------------


def test_aupro_perfect_map_is_one() -> None:
    # Every anomalous pixel scores above every normal pixel: the curve jumps to PRO = 1 at
    # FPR = 0 and stays there, so the area over [0, 0.3] is 0.3 and the normalized value 1.
    masks = np.zeros((3, 6, 6), dtype=bool)
    masks[0, 1:3, 1:4] = True
    masks[0, 5, 5] = True
    masks[2, 0:4, 0] = True
    maps = np.where(masks, 2.0, 0.0) + np.random.default_rng(0).random(masks.shape)
    assert pixel_aupro(maps, masks) == pytest.approx(1.0)
    assert pixel_aupro(maps, masks, fpr_limit=1.0) == pytest.approx(1.0)


def test_aupro_worst_map_is_zero() -> None:
    # Every anomalous pixel scores below every normal pixel: PRO stays 0 until FPR = 1.
    masks = np.zeros((1, 4, 4), dtype=bool)
    masks[0, :2, :2] = True
    maps = np.where(masks, 0.0, 1.0)
    assert pixel_aupro(maps, masks) == pytest.approx(0.0)


def test_aupro_half_of_one_region_above_all_normal_pixels() -> None:
    # One region of 4 pixels; 2 of them score above all 12 normal pixels, 2 below all of them.
    # Curve: (0, 0) -> (0, 1/4) -> (0, 1/2) -> ... (1, 1/2) -> (1, 3/4) -> (1, 1).
    # PRO = 1/2 on all of (0, 0.3]: area 0.15, normalized 0.15 / 0.3 = 0.5.
    masks = np.zeros((1, 4, 4), dtype=bool)
    masks[0, :2, :2] = True
    maps = np.zeros((1, 4, 4))
    maps[~masks] = np.linspace(0.1, 0.9, 12)
    maps[0, 0, 0], maps[0, 0, 1], maps[0, 1, 0], maps[0, 1, 1] = 3.0, 2.0, -1.0, -2.0
    assert pixel_aupro(maps, masks) == pytest.approx(0.5)
    # Over the whole FPR range the area is also 1/2 (PRO = 1/2 for 0 < FPR < 1).
    assert pixel_aupro(maps, masks, fpr_limit=1.0) == pytest.approx(0.5)


def test_aupro_step_inside_the_fpr_range() -> None:
    # One 1-pixel region and 10 normal pixels, 2 of which score above the anomalous pixel.
    # Curve: (0, 0) -> (0.1, 0) -> (0.2, 0) -> (0.2, 1) -> ... -> (1, 1).
    # Limit 0.3: area = (0.3 - 0.2) * 1 = 0.1, normalized 0.1 / 0.3 = 1/3.
    # Limit 1.0: area = 0.8.
    masks = np.zeros((1, 1, 11), dtype=bool)
    masks[0, 0, 5] = True
    maps = np.arange(11, dtype=float)[None, None, ::-1].copy()  # 10, 9, ..., 0
    # Normal pixels score 10, 9, 8, 7, 6, 4, 3, 2, 1, 0; the anomalous one 8.5 sits below
    # exactly two of them (10 and 9).
    maps[0, 0, 5] = 8.5
    assert pixel_aupro(maps, masks) == pytest.approx(1 / 3)
    assert pixel_aupro(maps, masks, fpr_limit=1.0) == pytest.approx(0.8)
    # Limit 0.15 lies before the step: PRO = 0 there, area 0.
    assert pixel_aupro(maps, masks, fpr_limit=0.15) == pytest.approx(0.0)


def test_aupro_constant_map_interpolates_at_the_limit() -> None:
    # All pixels tie: the curve is the single segment (0, 0) -> (1, 1), i.e. PRO = FPR.
    # Only the interpolated end point lies inside [0, 0.3]: area = 0.3^2 / 2 = 0.045,
    # normalized 0.045 / 0.3 = 0.15 (= fpr_limit / 2).
    masks = np.zeros((2, 5, 5), dtype=bool)
    masks[1, 1:3, 1:3] = True
    maps = np.full(masks.shape, 0.7)
    assert pixel_aupro(maps, masks) == pytest.approx(0.15)
    assert pixel_aupro(maps, masks, fpr_limit=0.5) == pytest.approx(0.25)
    assert pixel_aupro(maps, masks, fpr_limit=1.0) == pytest.approx(0.5)


def _aupro_of_detected_and_missed(
    shape: tuple[int, int, int], detected: list[tuple], missed: list[tuple]
) -> float:
    """AUPRO of masks made of the ``detected`` and ``missed`` pixels (numpy indices): normal
    pixels score 0.5, detected ones 1.0 (above all normal pixels), missed ones 0.0 (below)."""
    masks = np.zeros(shape, dtype=bool)
    maps = np.full(shape, 0.5)
    for index in detected:
        masks[index] = True
        maps[index] = 1.0
    for index in missed:
        masks[index] = True
        maps[index] = 0.0
    return pixel_aupro(maps, masks)


def test_aupro_weights_regions_equally_not_pixels() -> None:
    # Region A: 1 pixel, scored above all normal pixels (overlap 1).
    # Region B: 3 pixels (far from A), all scored below all normal pixels (overlap 0).
    # PRO = mean(1, 0) = 1/2 on (0, 0.3] -> 0.5. A pixel-weighted rate would give 1/4.
    aupro_value = _aupro_of_detected_and_missed((1, 6, 6), [np.s_[0, 0, 0]], [np.s_[0, 4, 2:5]])
    assert aupro_value == pytest.approx(0.5)


def test_aupro_regions_do_not_span_images() -> None:
    # Image 0: 1-pixel region at (0, 0), detected. Image 1: 3-pixel region at (0, 0..2), missed.
    # Per image they are two regions: PRO = mean(1, 0) = 1/2 -> 0.5. Had the labelling connected
    # them through the image axis, it would be one 4-pixel region with overlap 1/4 -> 0.25.
    aupro_value = _aupro_of_detected_and_missed((2, 4, 4), [np.s_[0, 0, 0]], [np.s_[1, 0, 0:3]])
    assert aupro_value == pytest.approx(0.5)


def test_aupro_uses_8_connectivity() -> None:
    # Pixels (0, 0) and (1, 1) touch diagonally: one region under 8-connectivity. Pixel (3, 3)
    # is a second region. (0, 0) and (3, 3) are detected (above all normal pixels), (1, 1) is
    # missed. 8-connectivity: PRO = mean(1/2, 1) = 3/4 -> 0.75.
    # (4-connectivity would give three regions and mean(1, 0, 1) = 2/3.)
    aupro_value = _aupro_of_detected_and_missed(
        (1, 5, 5), [np.s_[0, 0, 0], np.s_[0, 3, 3]], [np.s_[0, 1, 1]]
    )
    assert aupro_value == pytest.approx(0.75)


# ----------------------------------------------------------------------------------------------
# AUPRO, random inputs
# ----------------------------------------------------------------------------------------------


def _equal_size_regions(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Masks made of separate 2x2 squares (all regions the same size) and random maps."""
    rng = np.random.default_rng(seed)
    masks = np.zeros((4, 12, 12), dtype=bool)
    for image in range(1, 4):  # image 0 stays normal
        for r in range(0, 12, 4):  # squares at a 4-pixel pitch never touch, even diagonally
            for c in range(0, 12, 4):
                if rng.random() < 0.4:
                    masks[image, r : r + 2, c : c + 2] = True
    masks[1, 0:2, 0:2] = True
    return _noisy_maps(rng, masks, 0.4, seed), masks


@pytest.mark.parametrize("seed", SEEDS)
def test_aupro_equals_roc_when_all_regions_have_the_same_size(seed: int) -> None:
    # With K regions of n pixels each, PRO(t) = (1/K) sum_k hits_k / n = hits / (K n) = TPR(t),
    # so the PRO curve is the ROC curve. Over the whole range, AUPRO = AUROC; up to a limit L it
    # is the partial ROC area / L. scikit-learn's roc_auc_score(max_fpr=L) returns the McClish
    # standardization 0.5 * (1 + (A - L^2/2) / (L - L^2/2)) of that partial area A; invert it.
    maps, masks = _equal_size_regions(seed)
    y = masks.ravel()
    s = maps.astype(np.float32).ravel()
    assert pixel_aupro(maps, masks, fpr_limit=1.0) == pytest.approx(roc_auc_score(y, s), abs=1e-9)
    for limit in (0.05, 0.3, 0.77):
        mcclish = roc_auc_score(y, s, max_fpr=limit)
        min_area, max_area = 0.5 * limit**2, limit
        partial = min_area + (2 * mcclish - 1) * (max_area - min_area)
        assert pixel_aupro(maps, masks, fpr_limit=limit) == pytest.approx(partial / limit, abs=1e-9)


@pytest.mark.parametrize("seed", SEEDS)
def test_aupro_invariant_to_monotone_transform(seed: int) -> None:
    maps, masks = _pixel_data(seed)
    maps = np.round(maps, 2)  # values that stay distinct in float32 after the transform
    expected = pixel_aupro(maps, masks)
    assert 0.0 <= expected <= 1.0
    assert pixel_aupro(3.0 * maps - 1.0, masks) == pytest.approx(expected, abs=1e-12)
    assert pixel_aupro(np.exp(2.0 * maps), masks) == pytest.approx(expected, abs=1e-12)
    assert pixel_aupro(maps**3, masks) == pytest.approx(expected, abs=1e-12)


def test_aupro_binned_thresholds_on_a_grid_are_exact(monkeypatch: pytest.MonkeyPatch) -> None:
    # Maps on the grid {0, 0.25, 0.5, 0.75, 1} (min 0 and max 1 present): 5 evenly spaced
    # thresholds between min and max are exactly the distinct values, so the binned curve is
    # the exact one.
    rng = np.random.default_rng(7)
    masks = np.zeros((3, 8, 8), dtype=bool)
    masks[1, 2:5, 2:4] = True
    masks[2, 6:8, 0:3] = True
    maps = rng.integers(0, 5, size=masks.shape) / 4 + 0.25 * masks
    maps = np.clip(maps, 0.0, 1.0)
    maps[0, 0, 0], maps[0, 0, 1] = 0.0, 1.0
    exact = pixel_aupro(maps, masks, num_thresholds=5)
    monkeypatch.setattr(aupro, "AUPRO_EXACT_MAX_PIXELS", 0)
    assert pixel_aupro(maps, masks, num_thresholds=5) == pytest.approx(exact, abs=1e-12)


@pytest.mark.parametrize("seed", SEEDS)
def test_aupro_binned_thresholds_approximate_the_exact_curve(
    seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    maps, masks = _pixel_data(2 * seed + 1)  # odd seeds: continuous maps
    exact = pixel_aupro(maps, masks)
    monkeypatch.setattr(aupro, "AUPRO_EXACT_MAX_PIXELS", 0)
    assert pixel_aupro(maps, masks) == pytest.approx(exact, abs=2e-3)  # 1000 thresholds
    # Perfect maps remain perfect with binned thresholds.
    perfect = masks.astype(np.float32) + 0.1 * np.random.default_rng(seed).random(masks.shape)
    assert pixel_aupro(perfect, masks, num_thresholds=50) == pytest.approx(1.0)


@pytest.mark.parametrize("seed", SEEDS)
def test_even_threshold_bins_match_binary_search(seed: int) -> None:
    # The O(M) binning must agree with a binary search over the same float32 thresholds,
    # including scores that sit exactly on a threshold and ranges so small that float32
    # thresholds repeat.
    rng = np.random.default_rng(seed)
    for lo, hi, n in [(-3.0, 5.0, 1000), (0.0, 1.0, 7), (1.0, 1.0 + 1e-6, 50), (0.0, 1e30, 10)]:
        scores = rng.uniform(lo, hi, size=5000).astype(np.float32)
        scores[:2] = [lo, hi]
        thresholds = np.linspace(float(scores.min()), float(scores.max()), n).astype(np.float32)
        scores[2 : 2 + n] = thresholds  # exact hits
        expected = np.searchsorted(thresholds, scores, side="right") - 1
        np.testing.assert_array_equal(aupro._even_threshold_bins(scores, thresholds), expected)


def _pro_curve_brute_force(maps: np.ndarray, masks: np.ndarray) -> list[tuple[float, float]]:
    """Reference PRO curve: a loop over every distinct threshold and over every region."""
    maps = maps.astype(np.float32)
    regions = []
    for image in range(masks.shape[0]):
        labelled, n = ndimage.label(masks[image], structure=np.ones((3, 3)))
        regions += [maps[image][labelled == k] for k in range(1, n + 1)]
    normal = maps[~masks]
    points = [(0.0, 0.0)]
    for t in np.unique(maps)[::-1]:
        fpr = float(np.mean(normal >= t))
        pro = float(np.mean([np.mean(region >= t) for region in regions]))
        points.append((fpr, pro))
    return points


def _clipped_area(points: list[tuple[float, float]], fpr_limit: float) -> float:
    """Area of each linear segment clipped to [0, fpr_limit], summed, divided by fpr_limit."""
    area = 0.0
    for (x0, y0), (x1, y1) in itertools.pairwise(points):
        if x0 >= fpr_limit or x1 == x0:
            continue
        x_end = min(x1, fpr_limit)
        y_end = y0 + (y1 - y0) * (x_end - x0) / (x1 - x0)
        area += (x_end - x0) * (y0 + y_end) / 2
    return area / fpr_limit


@pytest.mark.parametrize("seed", SEEDS)
def test_aupro_matches_brute_force_with_regions_of_different_sizes(seed: int) -> None:
    maps, masks = _pixel_data(seed)
    maps = np.round(maps, 2)  # at most ~150 thresholds keep the reference loop fast
    curve = _pro_curve_brute_force(maps, masks)
    for limit in (0.1, 0.3, 1.0):
        assert pixel_aupro(maps, masks, fpr_limit=limit) == pytest.approx(
            _clipped_area(curve, limit), abs=1e-9
        )


@pytest.mark.parametrize("exact", [True, False])
def test_aupro_does_not_depend_on_the_chunk_size(
    exact: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    maps, masks = _pixel_data(1)
    if not exact:
        monkeypatch.setattr(aupro, "AUPRO_EXACT_MAX_PIXELS", 0)
    expected = pixel_aupro(maps, masks)
    monkeypatch.setattr(aupro, "_CHUNK", 37)  # many chunks, regions cut across chunks
    assert pixel_aupro(maps, masks) == pytest.approx(expected, abs=1e-12)


def test_aupro_nan_without_anomalous_or_normal_pixels() -> None:
    maps = np.random.default_rng(0).random((2, 4, 4))
    assert math.isnan(pixel_aupro(maps, np.zeros((2, 4, 4), dtype=bool)))
    assert math.isnan(pixel_aupro(maps, np.ones((2, 4, 4), dtype=bool)))


# ----------------------------------------------------------------------------------------------
# compute_metrics
# ----------------------------------------------------------------------------------------------


def test_compute_metrics_matches_individual_functions() -> None:
    scores, labels = _image_data(3, n=5)
    maps, masks = _pixel_data(3)
    result = compute_metrics(scores, labels, maps, masks)
    assert set(result) == {
        "image_auroc",
        "image_ap",
        "image_f1_max",
        "pixel_auroc",
        "pixel_ap",
        "pixel_aupro",
    }
    assert result["image_auroc"] == image_auroc(scores, labels)
    assert result["image_ap"] == image_ap(scores, labels)
    assert result["image_f1_max"] == f1_max(scores, labels)
    assert result["pixel_auroc"] == pixel_auroc(maps, masks)
    assert result["pixel_ap"] == pixel_ap(maps, masks)
    assert result["pixel_aupro"] == pixel_aupro(maps, masks)
    assert all(isinstance(v, float) for v in result.values())


def test_compute_metrics_without_maps_or_masks() -> None:
    scores, labels = _image_data(0)
    maps, _ = _pixel_data(0)
    for kwargs in ({}, {"maps": maps}, {"masks": np.zeros((5, 12, 10), dtype=bool)}):
        result = compute_metrics(scores, labels, **kwargs)
        assert result["image_auroc"] == image_auroc(scores, labels)
        assert result["pixel_auroc"] is None
        assert result["pixel_ap"] is None
        assert result["pixel_aupro"] is None


# ----------------------------------------------------------------------------------------------
# Errors
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fn", [image_auroc, image_ap, f1_max])
def test_image_metrics_reject_a_single_class(fn) -> None:
    with pytest.raises(UserError, match="has only label 0"):
        fn([0.1, 0.5, 0.9], [0, 0, 0])
    with pytest.raises(UserError, match="has only label 1"):
        fn([0.1, 0.5, 0.9], [1, 1, 1])
    with pytest.raises(UserError, match="empty"):
        fn([], [])


@pytest.mark.parametrize("fn", [image_auroc, image_ap, f1_max])
def test_image_metrics_reject_bad_inputs(fn) -> None:
    with pytest.raises(UserError, match=r"\(3,\).*\(4,\)"):
        fn([0.1, 0.5, 0.9], [0, 1, 0, 1])
    with pytest.raises(UserError, match=r"shape \(N,\)"):
        fn([[0.1, 0.5]], [[0, 1]])
    with pytest.raises(UserError, match="0/1"):
        fn([0.1, 0.5, 0.9], [0, 1, 2])
    with pytest.raises(UserError, match="NaN"):
        fn([0.1, float("nan"), 0.9], [0, 1, 0])


@pytest.mark.parametrize("fn", [pixel_auroc, pixel_ap])
def test_pixel_metrics_reject_a_single_class(fn) -> None:
    maps = np.random.default_rng(0).random((2, 4, 4))
    with pytest.raises(UserError, match="no anomalous pixel"):
        fn(maps, np.zeros((2, 4, 4), dtype=bool))
    with pytest.raises(UserError, match="no normal pixel"):
        fn(maps, np.ones((2, 4, 4), dtype=bool))


@pytest.mark.parametrize("fn", [pixel_auroc, pixel_ap, pixel_aupro])
def test_pixel_metrics_reject_bad_inputs(fn) -> None:
    maps, masks = _pixel_data(0)
    with pytest.raises(UserError, match=r"\(5, 12, 10\).*\(5, 10, 12\)"):
        fn(maps, masks.reshape(5, 10, 12))
    with pytest.raises(UserError, match=r"\(N, H, W\)"):
        fn(maps[0], masks[0])
    with pytest.raises(UserError, match="found the value 255"):
        fn(maps, masks.astype(np.uint8) * 255)
    bad_maps = maps.copy()
    bad_maps[0, 0, 0] = np.inf
    with pytest.raises(UserError, match="NaN or infinite"):
        fn(bad_maps, masks)


def test_aupro_rejects_bad_parameters() -> None:
    maps, masks = _pixel_data(0)
    for limit in (0.0, -0.1, 1.5):
        with pytest.raises(UserError, match="FPR limit"):
            pixel_aupro(maps, masks, fpr_limit=limit)
    with pytest.raises(UserError, match="at least 2 thresholds"):
        pixel_aupro(maps, masks, num_thresholds=1)


def test_user_error_messages_are_one_line() -> None:
    with pytest.raises(UserError) as info:
        image_auroc([0.1, 0.2], [0, 0])
    assert "\n" not in str(info.value)
    assert str(info.value) == (
        "image AUROC needs both normal and abnormal images; the test set has only label 0"
    )
