"""Streaming, binned pixel metrics: :class:`PixelMetricAccumulator`.

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
"""

from __future__ import annotations

from typing import Any

import numpy as np

from iqeclip.errors import UserError
from iqeclip.metrics.aupro import _label_regions, _partial_area, _pro_curve
from iqeclip.metrics.inputs import (
    _as_numpy,
    _binary_array,
    _check_fpr_limit,
    _check_pair_shapes,
    _require_both_pixel_classes,
)

__all__ = ["RANGE_TOLERANCE", "MapValueError", "PixelMetricAccumulator"]

RANGE_TOLERANCE = 1e-6
"""Map values at most this far outside ``[lo, hi]`` are clipped into the range by
:class:`PixelMetricAccumulator`; values farther out raise :class:`MapValueError`."""


class MapValueError(UserError, ValueError):
    """An anomaly map value that the binned pixel metrics cannot take: NaN or out of range."""


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
        ``(aupro, bound)``: the normalized area of :func:`~iqeclip.metrics.aupro.pixel_aupro`
        on the binned curve, and the most by which the area of the unbinned curve can differ:
        half the box area ``dFPR * dPRO`` of every segment below ``fpr_limit``, the whole box
        area for the segment that straddles it, divided by ``fpr_limit``.
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
    :func:`~iqeclip.metrics.aupro.pixel_aupro`), so every batch must hold whole images; how the
    images are split into batches does not change the result (up to float rounding of the PRO
    weights, ~1e-16).

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
        _check_pair_shapes(
            maps, masks_raw, "anomaly maps and masks", ("maps", "masks"), ("B", "H", "W")
        )
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
