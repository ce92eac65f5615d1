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

Streaming, binned pixel metrics
-------------------------------

The exact pixel metrics need every pixel score in memory, and scikit-learn copies them to
float64: a large medical test set (17k images of 240 x 240 = 1e9 pixels) would need tens of
GB. :class:`PixelMetricAccumulator` instead takes the maps batch by batch and keeps

* a histogram of the normal pixels' scores over ``bins`` equal-width bins on ``[lo, hi]``
  (int64),
* the same histogram of the anomalous pixels' scores (int64),
* for AUPRO, a histogram of the anomalous pixels' PRO weights ``1 / size of the pixel's
  region`` (float64), and the number of regions so far.

Regions never span two images and every batch holds whole images, so a pixel's region size is
known when its batch arrives and no per-pixel array is kept: memory is ``24 * bins`` bytes
(24 MiB with the default ``2**20`` bins) whatever the number of pixels, plus temporary arrays
of about 40 bytes per pixel of the current batch. (Keeping every anomalous pixel's bin and
region id instead would add O(anomalous pixels) for the same result.)

Error bounds of the binned metrics against the exact ones (on the same float32 maps). All
three only need the binning to be monotone, so that every bin is an interval of scores:

* AUROC: pairs (anomalous, normal) in different bins are ordered correctly; pairs in the same
  bin count as ties (1/2), while the exact AUROC counts them as 1, 1/2 or 0. With ``P_b`` and
  ``N_b`` the anomalous and normal counts of bin ``b`` (totals ``P`` and ``N``), the error is
  at most ``0.5 * sum_b P_b * N_b / (P * N)``, returned as ``pixel_auroc_error_bound``; the
  binned AUROC is exact when the scores are constant within each bin, and the bound is 0 when
  no bin holds both classes.
* AP: the thresholds are the bin edges (step-wise sum of precision times recall increase, as
  scikit-learn's ``average_precision_score``). An anomalous pixel of bin ``b`` contributes its
  precision at its own score to the exact AP, and the precision at the bin's lower edge to the
  binned AP; both lie in ``[(T + 1) / (T + 1 + F + N_b), (T + P_b) / (T + P_b + F)]`` with
  ``T`` and ``F`` the anomalous and normal counts above the bin, so the error is at most the
  sum over bins of ``P_b / P`` times that interval's width (``pixel_ap_error_bound``).
* AUPRO: the thresholds are the bin edges. Each binned (FPR, PRO) point lies on the exact
  curve, and between two consecutive points the exact curve is monotone, so it stays in the
  box the two points span: a bin contributes at most half its box's area ``dFPR * dPRO`` (the
  whole area for the box that straddles ``fpr_limit``), divided by ``fpr_limit``
  (``pixel_aupro_error_bound``).

On the unit tests' data (40 maps of 64 x 64, blob masks, smooth noise plus a signal inside the
blobs, default ``2**20`` bins, two seeds) the measured deviations from the exact metrics are
AUROC <= 3e-9 (bound <= 2e-7), AP <= 1.1e-6 (bound <= 4e-6) and AUPRO <= 6e-8 (bound <= 6e-7);
with only 4096 bins they are about 1e-6, 3e-4 and 3e-6. The binned metrics equal the exact
metrics of the maps rounded down to their bins (to float precision).

:func:`pixel_metrics` chooses between the exact functions (up to ``max_exact_pixels`` pixels)
and the accumulator, and :func:`compute_metrics` takes its result as ``pixel``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from scipy import ndimage
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score

from iqeclip.errors import UserError

__all__ = [
    "AUPRO_EXACT_MAX_PIXELS",
    "MapValueError",
    "PixelMetricAccumulator",
    "compute_metrics",
    "f1_max",
    "image_ap",
    "image_auroc",
    "pixel_ap",
    "pixel_aupro",
    "pixel_auroc",
    "pixel_metrics",
]

_CHUNK = 2**20  # pixels per chunk in pixel_aupro

AUPRO_EXACT_MAX_PIXELS = 2**22
"""Inputs to :func:`pixel_aupro` with at most this many pixels use every distinct score as a
threshold (the exact PRO curve); larger inputs use ``num_thresholds`` evenly spaced thresholds."""


RANGE_TOLERANCE = 1e-6
"""Map values at most this far outside ``[lo, hi]`` are clipped into the range by
:class:`PixelMetricAccumulator`; values farther out raise :class:`MapValueError`."""


class MapValueError(UserError, ValueError):
    """An anomaly map value that the binned pixel metrics cannot take: NaN or out of range."""


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


def _as_numpy(values: Any, dtype: Any = None) -> np.ndarray:
    """Return a numpy array, a torch tensor on any device, or a sequence as a CPU numpy array.

    Args:
        values: The array-like.
        dtype: The numpy dtype to convert to, or None to keep it. With float32, floating-point
            tensors are converted after the move to the CPU (no second copy on the
            accelerator; bfloat16, which numpy cannot hold, included).

    Returns:
        The numpy array (no copy when ``values`` already is one of that dtype).
    """
    if hasattr(values, "detach") and hasattr(values, "cpu"):  # a torch tensor
        values = values.detach().cpu()
        if dtype is np.float32 and values.is_floating_point():
            values = values.float()
        values = values.numpy()
    return np.asarray(values, dtype=dtype)


def _require_both_pixel_classes(n_anomalous: int, n_pixels: int, metric: str) -> None:
    if n_pixels == 0:
        raise UserError(f"{metric} needs both normal and anomalous pixels; the maps are empty")
    if n_anomalous == 0:
        raise UserError(
            f"{metric} needs both normal and anomalous pixels; the masks have no anomalous pixel"
        )
    if n_anomalous == n_pixels:
        raise UserError(
            f"{metric} needs both normal and anomalous pixels; the masks have no normal pixel"
        )


def _check_fpr_limit(fpr_limit: float) -> float:
    if not 0.0 < fpr_limit <= 1.0:
        raise UserError(f"the AUPRO FPR limit must be in (0, 1]; got {fpr_limit}")
    return float(fpr_limit)


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
    _require_both_pixel_classes(int(np.count_nonzero(masks)), masks.size, "pixel AUROC")
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
    _require_both_pixel_classes(int(np.count_nonzero(masks)), masks.size, "pixel AP")
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


def _label_regions(masks: np.ndarray) -> tuple[np.ndarray, int]:
    """Connected anomalous regions of each image, with 8-connectivity in the (H, W) plane.

    Args:
        masks: Boolean masks, shape (N, H, W).

    Returns:
        ``(regions, n_regions)``: region ids, shape (N, H, W), 0 outside the masks and
        ``1..n_regions`` inside, unique across the N images (regions never span two images).
    """
    structure = np.zeros((3, 3, 3), dtype=bool)
    structure[1] = True  # connect within the (H, W) plane only, never along N
    regions, n_regions = ndimage.label(masks, structure=structure)
    return regions, int(n_regions)


def _pro_curve(normal_hist: np.ndarray, pro_hist: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The (FPR, PRO) points of thresholds at the lower edges of the bins, highest first.

    Args:
        normal_hist: Normal pixel count per bin, shape (B,), bins in increasing score order.
        pro_hist: Summed PRO weight of the anomalous pixels per bin, shape (B,), summing to 1
            (a pixel's weight is ``1 / (number of regions * size of its region)``).

    Returns:
        ``(fpr, pro)``, each of shape (B + 1,): the point (0, 0) of an infinite threshold, then
        one point per bin from the highest down; ``fpr`` ends at exactly 1.
    """
    fpr = np.concatenate(([0.0], np.cumsum(normal_hist[::-1]) / normal_hist.sum()))
    pro = np.concatenate(([0.0], np.cumsum(pro_hist[::-1])))
    return fpr, pro


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
    fpr_limit = _check_fpr_limit(fpr_limit)
    if int(num_thresholds) != num_thresholds or num_thresholds < 2:
        raise UserError(f"the AUPRO needs at least 2 thresholds; got {num_thresholds}")
    maps, masks = _pixel_inputs(maps, masks)
    n_anomalous = int(np.count_nonzero(masks))
    if n_anomalous == 0 or n_anomalous == masks.size:
        return float("nan")

    regions, n_regions = _label_regions(masks)
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
    return _partial_area(*_pro_curve(normal_hist, pro_hist), fpr_limit)


# ----------------------------------------------------------------------------------------------
# Pixel level, streaming and binned
# ----------------------------------------------------------------------------------------------


def _binned_auroc(anomalous_hist: np.ndarray, normal_hist: np.ndarray) -> tuple[float, float]:
    """AUROC of binned scores, pairs in the same bin counting as ties, and its error bound.

    Args:
        anomalous_hist: Anomalous pixel count per bin ``P_b``, shape (B,), increasing scores.
        normal_hist: Normal pixel count per bin ``N_b``, shape (B,).

    Returns:
        ``(auroc, bound)``: ``sum_b P_b * (N_{<b} + N_b / 2) / (P * N)`` and
        ``0.5 * sum_b P_b * N_b / (P * N)``, the most by which the AUROC of the unbinned scores
        can differ (only the pairs within a bin can be ordered either way).
    """
    pos = anomalous_hist.astype(np.float64)
    neg = normal_hist.astype(np.float64)
    neg_below = (np.cumsum(normal_hist) - normal_hist).astype(np.float64)  # exact in int64
    pairs = pos.sum() * neg.sum()
    auroc = float(np.dot(pos, neg_below + 0.5 * neg) / pairs)
    bound = float(0.5 * np.dot(pos, neg) / pairs)
    return auroc, bound


def _binned_ap(anomalous_hist: np.ndarray, normal_hist: np.ndarray) -> tuple[float, float]:
    """Average precision with thresholds at the bin edges, and its error bound.

    AP is scikit-learn's step-wise ``sum_k (R_k - R_{k-1}) * P_k`` over the thresholds from the
    highest down; here a threshold is a bin's lower edge, so all pixels of a bin enter at once.

    Args:
        anomalous_hist: Anomalous pixel count per bin ``P_b``, shape (B,), increasing scores.
        normal_hist: Normal pixel count per bin ``N_b``, shape (B,).

    Returns:
        ``(ap, bound)``: the binned AP and the most by which the AP of the unbinned scores can
        differ (see the module docstring).
    """
    pos = anomalous_hist[::-1]
    neg = normal_hist[::-1]
    tp = np.cumsum(pos)  # anomalous pixels in this bin or above
    fp = np.cumsum(neg)
    used = pos > 0  # bins without anomalous pixels add no recall
    pos, neg, tp, fp = (a[used].astype(np.float64) for a in (pos, neg, tp, fp))
    total = tp[-1]
    ap = float(np.dot(pos, tp / (tp + fp)) / total)
    # Precision of an anomalous pixel of the bin, at its own score: its bin's first anomalous
    # pixel after every normal pixel of the bin, or its last one before them.
    lowest = (tp - pos + 1.0) / (tp - pos + 1.0 + fp)
    highest = tp / (tp + fp - neg)
    bound = float(np.dot(pos, highest - lowest) / total)
    return ap, bound


def _binned_aupro(
    normal_hist: np.ndarray, pro_hist: np.ndarray, fpr_limit: float
) -> tuple[float, float]:
    """AUPRO with thresholds at the bin edges, and its error bound.

    Args:
        normal_hist: Normal pixel count per bin, shape (B,), increasing scores.
        pro_hist: Summed PRO weight of the anomalous pixels per bin, shape (B,), summing to 1.
        fpr_limit: Upper FPR limit of the integral, in (0, 1].

    Returns:
        ``(aupro, bound)``: the normalized area of :func:`pixel_aupro` on the binned curve, and
        the most by which the area of the unbinned curve can differ: half the box area
        ``dFPR * dPRO`` of every segment below ``fpr_limit``, the whole box area for the segment
        that straddles it, divided by ``fpr_limit``.
    """
    fpr, pro = _pro_curve(normal_hist, pro_hist)
    boxes = np.diff(fpr) * np.diff(pro)
    below = fpr[1:] <= fpr_limit
    straddles = (fpr[:-1] < fpr_limit) & ~below
    bound = (0.5 * boxes[below].sum() + boxes[straddles].sum()) / fpr_limit
    return _partial_area(fpr, pro, fpr_limit), float(bound)


class PixelMetricAccumulator:
    """Streams ``(maps, masks)`` batches; memory O(bins), whatever the number of pixels.

    Scores are put into ``bins`` equal-width bins over ``[lo, hi]``; the accumulator keeps one
    histogram of the normal pixels, one of the anomalous pixels and one of the anomalous
    pixels' PRO weights (see the module docstring for the memory use and the error bounds).
    Regions are the connected components of each image's mask (8-connectivity, as in
    :func:`pixel_aupro`), so every batch must hold whole images; how the images are split into
    batches does not change the result (up to float rounding of the PRO weights, ~1e-16).

    Example::

        acc = PixelMetricAccumulator()
        for maps, masks in batches:  # (B, H, W) probabilities and masks, numpy or torch
            acc.update(maps, masks)
        metrics = acc.compute()  # pixel_auroc, pixel_ap, pixel_aupro and their error bounds

    Args:
        bins: Number of equal-width score bins, at least 1. The bin edges are the thresholds.
        lo: Lowest possible map value.
        hi: Highest possible map value, above ``lo``.
        fpr_limit: Upper FPR limit of the AUPRO integral, in (0, 1].

    Raises:
        UserError: On invalid parameters.
    """

    def __init__(
        self, bins: int = 2**20, lo: float = 0.0, hi: float = 1.0, fpr_limit: float = 0.3
    ) -> None:
        if int(bins) != bins or bins < 1:
            raise UserError(f"the number of score bins must be a positive integer; got {bins}")
        if not (np.isfinite(lo) and np.isfinite(hi) and lo < hi):
            raise UserError(f"the score range must be finite with lo < hi; got [{lo}, {hi}]")
        self.bins = int(bins)
        self.lo = float(lo)
        self.hi = float(hi)
        self.fpr_limit = _check_fpr_limit(fpr_limit)
        self._scale = self.bins / (self.hi - self.lo)
        self.normal_hist = np.zeros(self.bins, dtype=np.int64)
        self.anomalous_hist = np.zeros(self.bins, dtype=np.int64)
        self.pro_weight_hist = np.zeros(self.bins, dtype=np.float64)  # sum of 1 / region size
        self.n_regions = 0

    def _bin_indices(self, values: np.ndarray) -> np.ndarray:
        """Bin index of every value, after checking the range.

        Args:
            values: Map values, shape (M,).

        Returns:
            Bin indices in ``[0, bins - 1]``, shape (M,), non-decreasing in the value.

        Raises:
            MapValueError: On NaN, or a value more than :data:`RANGE_TOLERANCE` outside the
                range (values within the tolerance are clipped).
        """
        low, high = values.min(), values.max()
        if np.isnan(low) or np.isnan(high):
            raise MapValueError("anomaly maps contain NaN values")
        for value in (low, high):
            if not self.lo - RANGE_TOLERANCE <= value <= self.hi + RANGE_TOLERANCE:
                raise MapValueError(
                    f"anomaly map values must lie in [{self.lo:g}, {self.hi:g}] for the binned "
                    f"pixel metrics; found the value {float(value):g}"
                )
        # Float64 keeps the bin edges where they belong; the map is monotone in the score, so
        # every bin is an interval of scores (all the error bounds need).
        index = np.floor((values.astype(np.float64) - self.lo) * self._scale).astype(np.intp)
        np.clip(index, 0, self.bins - 1, out=index)
        return index

    def update(self, maps: Any, masks: Any) -> None:
        """Add a batch of whole images.

        Args:
            maps: Anomaly maps, shape (B, H, W), numpy or torch (any device and float dtype);
                moved to the CPU as float32.
            masks: Ground-truth masks, shape (B, H, W), boolean or 0/1 (1 = anomalous pixel).

        Raises:
            UserError: On a shape mismatch or masks other than 0/1.
            MapValueError: On NaN or out-of-range map values.
        """
        maps = _as_numpy(maps, np.float32)
        masks_raw = _as_numpy(masks)
        if maps.shape != masks_raw.shape:
            raise UserError(
                f"anomaly maps and masks must have the same shape; "
                f"got maps {maps.shape} and masks {masks_raw.shape}"
            )
        if maps.ndim != 3:
            raise UserError(f"anomaly maps and masks must have shape (B, H, W); got {maps.shape}")
        if maps.size == 0:
            return
        masks = _binary_array(masks_raw, "pixel masks")
        index = self._bin_indices(maps.ravel())
        anomalous = masks.ravel()
        counts = np.bincount(index + self.bins * anomalous, minlength=2 * self.bins)
        self.normal_hist += counts[: self.bins]
        self.anomalous_hist += counts[self.bins :]
        if anomalous.any():
            regions, n_regions = _label_regions(masks)
            region = regions.ravel()[anomalous]
            sizes = np.bincount(region).astype(np.float64)
            self.pro_weight_hist += np.bincount(
                index[anomalous], weights=1.0 / sizes[region], minlength=self.bins
            )
            self.n_regions += n_regions

    def compute(self) -> dict[str, float]:
        """The binned pixel metrics of all batches so far (the accumulator is left unchanged).

        Returns:
            ``pixel_auroc``, ``pixel_ap``, ``pixel_aupro`` (up to ``fpr_limit``) and the bounds
            ``pixel_auroc_error_bound``, ``pixel_ap_error_bound`` and
            ``pixel_aupro_error_bound`` on their distance to the exact metrics of the same maps.

        Raises:
            UserError: When the batches do not contain both normal and anomalous pixels.
        """
        n_anomalous = int(self.anomalous_hist.sum())
        n_pixels = n_anomalous + int(self.normal_hist.sum())
        _require_both_pixel_classes(n_anomalous, n_pixels, "the binned pixel metrics")
        auroc, auroc_bound = _binned_auroc(self.anomalous_hist, self.normal_hist)
        ap, ap_bound = _binned_ap(self.anomalous_hist, self.normal_hist)
        aupro, aupro_bound = _binned_aupro(
            self.normal_hist, self.pro_weight_hist / self.n_regions, self.fpr_limit
        )
        return {
            "pixel_auroc": auroc,
            "pixel_ap": ap,
            "pixel_aupro": aupro,
            "pixel_auroc_error_bound": auroc_bound,
            "pixel_ap_error_bound": ap_bound,
            "pixel_aupro_error_bound": aupro_bound,
        }


def _exact_pixel_metrics(maps: Any, masks: Any) -> dict[str, float]:
    """``pixel_auroc``, ``pixel_ap`` and ``pixel_aupro`` from the exact functions."""
    maps_f32, masks_bool = _pixel_inputs(maps, masks)  # convert once for all three
    return {
        "pixel_auroc": pixel_auroc(maps_f32, masks_bool),
        "pixel_ap": pixel_ap(maps_f32, masks_bool),
        "pixel_aupro": pixel_aupro(maps_f32, masks_bool),
    }


def pixel_metrics(
    maps: Any, masks: Any, max_exact_pixels: int, bins: int = 2**20
) -> dict[str, float | str]:
    """Pixel metrics, exact for small inputs and binned for large ones.

    Up to ``max_exact_pixels`` pixels the exact functions :func:`pixel_auroc`,
    :func:`pixel_ap` and :func:`pixel_aupro` are used (AUPRO itself switches to evenly spaced
    thresholds above :data:`AUPRO_EXACT_MAX_PIXELS`); above, a
    :class:`PixelMetricAccumulator` with ``bins`` bins over the maps' own [min, max] range,
    fed about 2**20 pixels at a time, so that no float64 copy of all the maps is made.

    Args:
        maps: Anomaly maps, shape (N, H, W), numpy or torch; converted to float32.
        masks: Ground-truth masks, shape (N, H, W), boolean or 0/1.
        max_exact_pixels: The largest number of pixels for the exact metrics.
        bins: Number of bins of the binned metrics.

    Returns:
        ``pixel_auroc``, ``pixel_ap``, ``pixel_aupro`` (FPR limit 0.3), the error bounds
        ``pixel_auroc_error_bound``, ``pixel_ap_error_bound`` and ``pixel_aupro_error_bound``
        (0.0 for the exact metrics; NaN for an AUPRO with evenly spaced thresholds) and
        ``pixel_method``: ``"exact"`` or ``"binned"``.

    Raises:
        UserError: On invalid inputs, as described for the exact metrics.
    """
    maps, masks = _pixel_inputs(_as_numpy(maps, np.float32), _as_numpy(masks))
    if maps.size <= max_exact_pixels:
        return {
            **_exact_pixel_metrics(maps, masks),
            "pixel_auroc_error_bound": 0.0,
            "pixel_ap_error_bound": 0.0,
            "pixel_aupro_error_bound": 0.0 if maps.size <= AUPRO_EXACT_MAX_PIXELS else np.nan,
            "pixel_method": "exact",
        }
    lo, hi = float(maps.min()), float(maps.max())
    acc = PixelMetricAccumulator(bins=bins, lo=lo, hi=hi if hi > lo else lo + 1.0)
    step = max(1, _CHUNK // max(1, maps[0].size))
    for start in range(0, len(maps), step):
        acc.update(maps[start : start + step], masks[start : start + step])
    return {**acc.compute(), "pixel_method": "binned"}


# ----------------------------------------------------------------------------------------------
# All together
# ----------------------------------------------------------------------------------------------


def compute_metrics(
    image_scores: np.ndarray,
    image_labels: np.ndarray,
    maps: np.ndarray | None = None,
    masks: np.ndarray | None = None,
    *,
    pixel: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Compute all image-level and (when maps and masks are given) pixel-level metrics.

    Args:
        image_scores: Per-image anomaly scores, shape (N,).
        image_labels: Per-image labels, shape (N,), 0 = normal, 1 = abnormal.
        maps: Anomaly maps, shape (M, H, W), or None.
        masks: Ground-truth masks, shape (M, H, W), or None. Exact pixel metrics are computed
            only when both ``maps`` and ``masks`` are given (a data set without masks can still
            pass its maps).
        pixel: Precomputed pixel metrics instead of ``maps`` and ``masks``, e.g. from
            :func:`pixel_metrics` or :meth:`PixelMetricAccumulator.compute`; they must hold
            ``pixel_auroc``, ``pixel_ap`` and ``pixel_aupro``, and all their entries are
            copied into the result.

    Returns:
        A dict with the keys ``image_auroc``, ``image_ap``, ``image_f1_max``, ``pixel_auroc``,
        ``pixel_ap`` and ``pixel_aupro`` (default FPR limit 0.3), plus any other entries of
        ``pixel``. The ``pixel_*`` values are None when neither ``pixel`` nor both ``maps`` and
        ``masks`` are given.

    Raises:
        UserError: On invalid inputs, as described for the individual metrics.
        ValueError: When ``pixel`` is given together with ``maps`` or ``masks``, or lacks a key.
    """
    results: dict[str, Any] = {
        "image_auroc": image_auroc(image_scores, image_labels),
        "image_ap": image_ap(image_scores, image_labels),
        "image_f1_max": f1_max(image_scores, image_labels),
        "pixel_auroc": None,
        "pixel_ap": None,
        "pixel_aupro": None,
    }
    if pixel is not None:
        if maps is not None or masks is not None:
            raise ValueError("pass either maps and masks or precomputed pixel metrics, not both")
        missing = sorted({"pixel_auroc", "pixel_ap", "pixel_aupro"} - set(pixel))
        if missing:
            raise ValueError(f"the precomputed pixel metrics lack {', '.join(missing)}")
        results.update(pixel)
    elif maps is not None and masks is not None:
        results.update(_exact_pixel_metrics(maps, masks))
    return results
