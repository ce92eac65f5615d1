"""Evaluation metrics for anomaly detection (image level) and localization (pixel level).

Image level:

* :func:`image_auroc` - area under the ROC curve of per-image anomaly scores.
* :func:`image_ap` - average precision of per-image anomaly scores.
* :func:`f1_max` - the best F1 score over all thresholds.

Pixel level (all pixels of all images pooled, normal images included):

* :func:`pixel_auroc` - area under the ROC curve of the anomaly maps.
* :func:`pixel_ap` - average precision of the anomaly maps.
* :func:`pixel_aupro` - normalized area under the per-region-overlap (PRO) curve up to a
  false-positive-rate limit, as in MVTec AD / anomalib.

AUROC, AP and the precision-recall curve come from scikit-learn. Every problem with the inputs
(mismatched shapes, labels other than 0/1, NaN scores, a test set with a single class) raises
:class:`~iqeclip.errors.UserError` with a one-line message.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import ndimage
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score

from iqeclip.errors import UserError

__all__ = [
    "AUPRO_EXACT_MAX_PIXELS",
    "compute_metrics",
    "f1_max",
    "image_ap",
    "image_auroc",
    "pixel_ap",
    "pixel_aupro",
    "pixel_auroc",
]

_CHUNK = 2**20  # pixels per chunk in pixel_aupro

AUPRO_EXACT_MAX_PIXELS = 2**22
"""Inputs to :func:`pixel_aupro` with at most this many pixels use every distinct score as a
threshold (the exact PRO curve); larger inputs use ``num_thresholds`` evenly spaced thresholds."""


# ----------------------------------------------------------------------------------------------
# Input checks
# ----------------------------------------------------------------------------------------------


def _binary_array(values: Any, what: str) -> np.ndarray:
    """Return ``values`` as a boolean array, raising if it holds anything other than 0 and 1."""
    arr = np.asarray(values)
    if arr.dtype == np.bool_:
        return arr
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.object_):
        raise UserError(f"{what} must be 0/1 or boolean; got an array of dtype {arr.dtype}")
    bad = (arr != 0) & (arr != 1)
    if np.any(bad):
        example = arr[bad].flat[0]
        raise UserError(f"{what} must be 0/1 or boolean; found the value {example}")
    return arr == 1


def _check_finite(scores: np.ndarray, what: str) -> None:
    if not np.all(np.isfinite(scores)):
        raise UserError(f"{what} contain NaN or infinite values")


def _image_inputs(scores: Any, labels: Any, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """Validate per-image scores and labels; return them as float64 scores and boolean labels.

    Args:
        scores: Anomaly scores, shape (N,).
        labels: Ground-truth labels, shape (N,), 0 = normal, 1 = abnormal.
        metric: Metric name used in error messages.

    Returns:
        ``(scores, labels)`` with shapes (N,) and (N,), dtypes float64 and bool.

    Raises:
        UserError: On a shape mismatch, non-binary labels, non-finite scores, or when the test
            set does not contain both classes.
    """
    scores = np.asarray(scores, dtype=np.float64)
    labels_raw = np.asarray(labels)
    if scores.shape != labels_raw.shape:
        raise UserError(
            f"image scores and labels must have the same shape; "
            f"got scores {scores.shape} and labels {labels_raw.shape}"
        )
    if scores.ndim != 1:
        raise UserError(f"image scores and labels must have shape (N,); got {scores.shape}")
    labels_bool = _binary_array(labels_raw, "image labels")
    _check_finite(scores, "image scores")
    n_abnormal = int(labels_bool.sum())
    if scores.size == 0:
        raise UserError(f"{metric} needs both normal and abnormal images; the test set is empty")
    if n_abnormal in (0, scores.size):
        only = 1 if n_abnormal else 0
        raise UserError(
            f"{metric} needs both normal and abnormal images; the test set has only label {only}"
        )
    return scores, labels_bool


def _pixel_inputs(maps: Any, masks: Any) -> tuple[np.ndarray, np.ndarray]:
    """Validate anomaly maps and ground-truth masks.

    Args:
        maps: Anomaly maps, shape (N, H, W), any real dtype.
        masks: Ground-truth masks, shape (N, H, W), boolean or 0/1.

    Returns:
        ``(maps, masks)`` with shape (N, H, W), dtypes float32 and bool (no copy when the inputs
        already have those dtypes).

    Raises:
        UserError: On a shape mismatch, masks other than 0/1, or non-finite map values.
    """
    maps = np.asarray(maps, dtype=np.float32)
    masks_raw = np.asarray(masks)
    if maps.shape != masks_raw.shape:
        raise UserError(
            f"anomaly maps and masks must have the same shape; "
            f"got maps {maps.shape} and masks {masks_raw.shape}"
        )
    if maps.ndim != 3:
        raise UserError(f"anomaly maps and masks must have shape (N, H, W); got {maps.shape}")
    masks_bool = _binary_array(masks_raw, "pixel masks")
    _check_finite(maps, "anomaly maps")
    return maps, masks_bool


def _require_both_pixel_classes(masks: np.ndarray, metric: str) -> None:
    n_anomalous = int(np.count_nonzero(masks))
    if masks.size == 0:
        raise UserError(f"{metric} needs both normal and anomalous pixels; the maps are empty")
    if n_anomalous == 0:
        raise UserError(
            f"{metric} needs both normal and anomalous pixels; the masks have no anomalous pixel"
        )
    if n_anomalous == masks.size:
        raise UserError(
            f"{metric} needs both normal and anomalous pixels; the masks have no normal pixel"
        )


# ----------------------------------------------------------------------------------------------
# Image level
# ----------------------------------------------------------------------------------------------


def image_auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Image-level area under the ROC curve.

    Args:
        scores: Per-image anomaly scores, shape (N,); higher means more anomalous.
        labels: Ground-truth labels, shape (N,), 0 = normal, 1 = abnormal (bool also accepted).

    Returns:
        AUROC in [0, 1].

    Raises:
        UserError: On a shape mismatch, non-binary labels, NaN/inf scores, or a single class.
    """
    scores, labels = _image_inputs(scores, labels, "image AUROC")
    return float(roc_auc_score(labels, scores))


def image_ap(scores: np.ndarray, labels: np.ndarray) -> float:
    """Image-level average precision (scikit-learn's step-wise definition, no interpolation).

    Args:
        scores: Per-image anomaly scores, shape (N,); higher means more anomalous.
        labels: Ground-truth labels, shape (N,), 0 = normal, 1 = abnormal.

    Returns:
        Average precision in [0, 1].

    Raises:
        UserError: On a shape mismatch, non-binary labels, NaN/inf scores, or a single class.
    """
    scores, labels = _image_inputs(scores, labels, "image AP")
    return float(average_precision_score(labels, scores))


def f1_max(scores: np.ndarray, labels: np.ndarray) -> float:
    """Maximum F1 score over all thresholds of the image-level scores.

    Every distinct score is tried as a threshold (``score >= threshold`` is predicted
    abnormal), using scikit-learn's precision-recall curve. A point where precision and recall
    are both 0 counts as F1 = 0.

    Args:
        scores: Per-image anomaly scores, shape (N,); higher means more anomalous.
        labels: Ground-truth labels, shape (N,), 0 = normal, 1 = abnormal.

    Returns:
        The best F1 in [0, 1].

    Raises:
        UserError: On a shape mismatch, non-binary labels, NaN/inf scores, or a single class.
    """
    scores, labels = _image_inputs(scores, labels, "image F1-max")
    precision, recall, _ = precision_recall_curve(labels, scores)
    denom = precision + recall
    f1 = np.divide(
        2.0 * precision * recall, denom, out=np.zeros_like(denom, dtype=np.float64), where=denom > 0
    )
    return float(f1.max())


# ----------------------------------------------------------------------------------------------
# Pixel level
# ----------------------------------------------------------------------------------------------


def pixel_auroc(maps: np.ndarray, masks: np.ndarray) -> float:
    """Pixel-level area under the ROC curve, all pixels of all images pooled.

    Args:
        maps: Anomaly maps, shape (N, H, W); converted to float32.
        masks: Ground-truth masks, shape (N, H, W), boolean or 0/1 (1 = anomalous pixel).
            Normal images (all-zero masks) are included.

    Returns:
        AUROC in [0, 1].

    Raises:
        UserError: On a shape mismatch, non-binary masks, NaN/inf map values, or when the masks
            do not contain both normal and anomalous pixels.
    """
    maps, masks = _pixel_inputs(maps, masks)
    _require_both_pixel_classes(masks, "pixel AUROC")
    return float(roc_auc_score(masks.ravel(), maps.ravel()))


def pixel_ap(maps: np.ndarray, masks: np.ndarray) -> float:
    """Pixel-level average precision, all pixels of all images pooled.

    Args:
        maps: Anomaly maps, shape (N, H, W); converted to float32.
        masks: Ground-truth masks, shape (N, H, W), boolean or 0/1 (1 = anomalous pixel).

    Returns:
        Average precision in [0, 1].

    Raises:
        UserError: On a shape mismatch, non-binary masks, NaN/inf map values, or when the masks
            do not contain both normal and anomalous pixels.
    """
    maps, masks = _pixel_inputs(maps, masks)
    _require_both_pixel_classes(masks, "pixel AP")
    return float(average_precision_score(masks.ravel(), maps.ravel()))


def _partial_area(fpr: np.ndarray, pro: np.ndarray, fpr_limit: float) -> float:
    """Trapezoidal area under a curve from fpr = 0 to ``fpr_limit``, divided by ``fpr_limit``.

    Args:
        fpr: Non-decreasing false positive rates, shape (P,), starting at 0 and ending at 1.
        pro: PRO values at the same points, shape (P,).
        fpr_limit: Upper integration limit in (0, 1].

    Returns:
        The normalized area; 1.0 for a curve that is 1 on all of (0, fpr_limit].
    """
    stop = int(np.searchsorted(fpr, fpr_limit, side="right"))  # points with fpr <= limit
    x = fpr[:stop]
    y = pro[:stop]
    if x[-1] < fpr_limit:  # fpr[-1] == 1 >= limit, so fpr[stop] > limit exists
        x0, x1 = fpr[stop - 1], fpr[stop]
        y0, y1 = pro[stop - 1], pro[stop]
        y_end = y0 + (y1 - y0) * (fpr_limit - x0) / (x1 - x0)
        x = np.append(x, fpr_limit)
        y = np.append(y, y_end)
    area = float(np.sum(np.diff(x) * (y[1:] + y[:-1])) / 2.0)
    return area / fpr_limit


def _even_threshold_bins(scores: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Bin scores by sorted, evenly spaced thresholds.

    Args:
        scores: Finite scores, shape (M,), float32, none below ``thresholds[0]``.
        thresholds: ``np.linspace(lo, hi, T)`` rounded to float32, shape (T,), T >= 2.

    Returns:
        Bin indices, shape (M,), in ``[0, T - 1]``: the index of the highest threshold that is
        <= the score, so ``score >= thresholds[j]`` exactly when ``bin >= j`` (the same as
        ``np.searchsorted(thresholds, scores, side="right") - 1``).
    """
    top = len(thresholds) - 1
    lo, hi = thresholds[0], thresholds[-1]
    if not np.isfinite(hi - lo):  # the range overflows float32
        return np.searchsorted(thresholds, scores, side="right") - 1
    if hi == lo:
        return np.full(scores.shape, top, dtype=np.intp)
    # A first guess in O(M) (a binary search is several times slower on large inputs), then
    # move the few bins that float rounding put off by one.
    scale = np.float32(top / (float(hi) - float(lo)))
    bins = ((scores - lo) * scale).astype(np.intp)
    np.clip(bins, 0, top, out=bins)
    while True:  # scores >= thresholds[0], so no bin goes below 0
        too_high = scores < thresholds[bins]
        if not too_high.any():
            break
        bins[too_high] -= 1
    while True:
        nxt = np.minimum(bins + 1, top)
        too_low = (nxt > bins) & (scores >= thresholds[nxt])
        if not too_low.any():
            break
        bins[too_low] += 1
    return bins


def pixel_aupro(
    maps: np.ndarray,
    masks: np.ndarray,
    fpr_limit: float = 0.3,
    num_thresholds: int = 1000,
) -> float:
    """Normalized area under the per-region-overlap (PRO) curve up to ``fpr_limit``.

    The ground-truth masks are split into connected regions per image with
    ``scipy.ndimage.label`` using **8-connectivity** (diagonal neighbours are connected);
    regions never span two images. For a threshold ``t`` a pixel is predicted anomalous when
    ``map >= t``, and

    * PRO(t) = mean over all regions (of all images) of the fraction of the region's pixels
      predicted anomalous, so every region counts equally whatever its size;
    * FPR(t) = fraction of normal pixels (outside every mask, normal images included)
      predicted anomalous.

    PRO is integrated over FPR from 0 to ``fpr_limit`` with the trapezoidal rule, adding a
    point at ``fpr_limit`` by linear interpolation, and divided by ``fpr_limit``, so a perfect
    map gives 1.0 and a constant map (PRO = FPR, the diagonal) gives ``fpr_limit / 2``.

    Thresholds: when the maps hold at most :data:`AUPRO_EXACT_MAX_PIXELS` pixels (2**22, about
    80 maps of 224 x 224), every distinct map value is a threshold and the curve is exact (and
    the result is invariant to any strictly increasing transform of the maps). Larger inputs
    use ``num_thresholds`` thresholds evenly spaced between the minimum and the maximum map
    value; pixels between two thresholds then act as ties, which costs a little accuracy but
    keeps time and memory linear in the number of pixels.

    Args:
        maps: Anomaly maps, shape (N, H, W); converted to float32.
        masks: Ground-truth masks, shape (N, H, W), boolean or 0/1 (1 = anomalous pixel).
        fpr_limit: Upper FPR limit of the integral, in (0, 1].
        num_thresholds: Number of evenly spaced thresholds for large inputs, at least 2.

    Returns:
        The normalized AUPRO in [0, 1], or NaN when the masks contain no anomalous pixel or no
        normal pixel (the PRO or the FPR is then undefined).

    Raises:
        UserError: On a shape mismatch, non-binary masks, NaN/inf map values, ``fpr_limit``
            outside (0, 1] or ``num_thresholds`` below 2.
    """
    if not 0.0 < fpr_limit <= 1.0:
        raise UserError(f"the AUPRO FPR limit must be in (0, 1]; got {fpr_limit}")
    if int(num_thresholds) != num_thresholds or num_thresholds < 2:
        raise UserError(f"the AUPRO needs at least 2 thresholds; got {num_thresholds}")
    maps, masks = _pixel_inputs(maps, masks)
    n_anomalous = int(np.count_nonzero(masks))
    if n_anomalous == 0 or n_anomalous == masks.size:
        return float("nan")

    # Connected regions per image: connect within the (H, W) plane only, never along N.
    structure = np.zeros((3, 3, 3), dtype=bool)
    structure[1] = True
    regions, n_regions = ndimage.label(masks, structure=structure)
    # Each anomalous pixel carries the weight 1 / (n_regions * size of its region), so that the
    # summed weight of the pixels above a threshold is PRO at that threshold. Region 0 is the
    # normal background.
    region_sizes = np.bincount(regions[masks], minlength=n_regions + 1)
    region_weights = np.zeros(n_regions + 1)
    region_weights[1:] = 1.0 / (n_regions * region_sizes[1:].astype(np.float64))

    # Bin index of every pixel such that pixel >= threshold[j] exactly when bin >= j.
    flat_maps, flat_regions = maps.ravel(), regions.ravel()
    exact = flat_maps.size <= AUPRO_EXACT_MAX_PIXELS
    exact_bins = thresholds = None
    if exact:
        values, exact_bins = np.unique(flat_maps, return_inverse=True)
        exact_bins = exact_bins.ravel()
        n_bins = len(values)
    else:
        n_bins = int(num_thresholds)
        lo, hi = float(flat_maps.min()), float(flat_maps.max())
        thresholds = np.linspace(lo, hi, n_bins).astype(np.float32)

    # Histograms over the bins, accumulated in chunks to bound the temporary memory.
    normal_hist = np.zeros(n_bins, dtype=np.int64)
    pro_hist = np.zeros(n_bins, dtype=np.float64)
    for start in range(0, flat_maps.size, _CHUNK):
        chunk = slice(start, start + _CHUNK)
        bins = exact_bins[chunk] if exact else _even_threshold_bins(flat_maps[chunk], thresholds)
        region = flat_regions[chunk]
        anomalous = region > 0
        normal_hist += np.bincount(bins[~anomalous], minlength=n_bins)
        pro_hist += np.bincount(
            bins[anomalous], weights=region_weights[region[anomalous]], minlength=n_bins
        )
    # Walk the thresholds from the highest down; prepend the point (0, 0) of an infinite one.
    fpr = np.concatenate(([0.0], np.cumsum(normal_hist[::-1]) / normal_hist.sum()))
    pro = np.concatenate(([0.0], np.cumsum(pro_hist[::-1])))
    return _partial_area(fpr, pro, float(fpr_limit))


# ----------------------------------------------------------------------------------------------
# All together
# ----------------------------------------------------------------------------------------------


def compute_metrics(
    image_scores: np.ndarray,
    image_labels: np.ndarray,
    maps: np.ndarray | None = None,
    masks: np.ndarray | None = None,
) -> dict[str, float | None]:
    """Compute all image-level and (when maps and masks are given) pixel-level metrics.

    Args:
        image_scores: Per-image anomaly scores, shape (N,).
        image_labels: Per-image labels, shape (N,), 0 = normal, 1 = abnormal.
        maps: Anomaly maps, shape (M, H, W), or None.
        masks: Ground-truth masks, shape (M, H, W), or None. Pixel metrics are computed only
            when both ``maps`` and ``masks`` are given (a data set without masks can still pass
            its maps).

    Returns:
        A dict with the keys ``image_auroc``, ``image_ap``, ``image_f1_max``, ``pixel_auroc``,
        ``pixel_ap`` and ``pixel_aupro`` (default FPR limit 0.3). The ``pixel_*`` values are
        None when ``maps`` or ``masks`` is None.

    Raises:
        UserError: On invalid inputs, as described for the individual metrics.
    """
    results: dict[str, float | None] = {
        "image_auroc": image_auroc(image_scores, image_labels),
        "image_ap": image_ap(image_scores, image_labels),
        "image_f1_max": f1_max(image_scores, image_labels),
        "pixel_auroc": None,
        "pixel_ap": None,
        "pixel_aupro": None,
    }
    if maps is not None and masks is not None:
        maps_f32, masks_bool = _pixel_inputs(maps, masks)  # convert once for all three
        results["pixel_auroc"] = pixel_auroc(maps_f32, masks_bool)
        results["pixel_ap"] = pixel_ap(maps_f32, masks_bool)
        results["pixel_aupro"] = pixel_aupro(maps_f32, masks_bool)
    return results
