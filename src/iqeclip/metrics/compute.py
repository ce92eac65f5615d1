"""All metrics together: :func:`compute_metrics`.

The image-level metrics always; the pixel-level ones from maps and masks (exact) or from
precomputed values, e.g. those of :func:`~iqeclip.metrics.pixel.pixel_metrics`, which chooses
between the exact functions and the binned accumulator.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from iqeclip.metrics.image import f1_max, image_ap, image_auroc
from iqeclip.metrics.pixel import _exact_pixel_metrics

__all__ = ["compute_metrics"]


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
            :func:`~iqeclip.metrics.pixel.pixel_metrics` or
            :meth:`~iqeclip.metrics.streaming.PixelMetricAccumulator.compute`; they must hold
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
