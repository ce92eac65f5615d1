"""Pixel-level AUPRO: the normalized area under the per-region-overlap (PRO) curve.

:func:`pixel_aupro` integrates the PRO curve up to a false-positive-rate limit, as in
MVTec AD / anomalib. The helpers for the regions and the curve (:func:`_label_regions`,
:func:`_pro_curve`, :func:`_partial_area`) also serve the binned AUPRO of
:mod:`iqeclip.metrics.streaming`.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from iqeclip.errors import UserError
from iqeclip.metrics.inputs import _check_fpr_limit, _pixel_inputs

__all__ = ["AUPRO_EXACT_MAX_PIXELS", "pixel_aupro"]

_CHUNK = 2**20  # pixels per chunk in pixel_aupro

AUPRO_EXACT_MAX_PIXELS = 2**22
"""Inputs to :func:`pixel_aupro` with at most this many pixels use every distinct score as a
threshold (the exact PRO curve); larger inputs use ``num_thresholds`` evenly spaced thresholds."""


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

    normal_hist, pro_hist = _histograms(
        maps.ravel(), regions.ravel(), region_weights, num_thresholds
    )
    return _partial_area(*_pro_curve(normal_hist, pro_hist), fpr_limit)


def _histograms(
    flat_maps: np.ndarray, flat_regions: np.ndarray, region_weights: np.ndarray, num_thresholds: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per threshold bin, the count of normal pixels and the summed PRO weight of the anomalous
    ones (every distinct value a bin for small inputs, else ``num_thresholds`` even bins)."""
    # Bin index of every pixel such that pixel >= threshold[j] exactly when bin >= j.
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
    return normal_hist, pro_hist
