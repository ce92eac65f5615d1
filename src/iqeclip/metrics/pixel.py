"""Pixel-level metrics, all pixels of all images pooled (normal images included).

* :func:`pixel_auroc` - area under the ROC curve of the anomaly maps.
* :func:`pixel_ap` - average precision of the anomaly maps.
* :func:`pixel_metrics` - these two and the AUPRO (:func:`~iqeclip.metrics.aupro.pixel_aupro`)
  together: exact up to ``max_exact_pixels`` pixels, above that from the binned
  :class:`~iqeclip.metrics.streaming.PixelMetricAccumulator`.

AUROC and AP come from scikit-learn.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score

from iqeclip.metrics.aupro import _CHUNK, AUPRO_EXACT_MAX_PIXELS, pixel_aupro
from iqeclip.metrics.inputs import _as_numpy, _pixel_inputs, _require_both_pixel_classes
from iqeclip.metrics.streaming import PixelMetricAccumulator

__all__ = ["pixel_ap", "pixel_auroc", "pixel_metrics"]


def _pooled_score(
    maps: Any, masks: Any, metric: str, score: Callable[[np.ndarray, np.ndarray], float]
) -> float:
    """``score(labels, scores)`` of all pixels of all images pooled, after the input checks.

    Args:
        maps: Anomaly maps, shape (N, H, W); converted to float32.
        masks: Ground-truth masks, shape (N, H, W), boolean or 0/1 (1 = anomalous pixel).
        metric: Metric name used in error messages.
        score: A scikit-learn style metric of the flat boolean masks and float32 maps.

    Returns:
        The metric as a Python float.
    """
    maps, masks = _pixel_inputs(maps, masks)
    _require_both_pixel_classes(int(np.count_nonzero(masks)), masks.size, metric)
    return float(score(masks.ravel(), maps.ravel()))


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
    return _pooled_score(maps, masks, "pixel AUROC", roc_auc_score)


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
    return _pooled_score(maps, masks, "pixel AP", average_precision_score)


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
