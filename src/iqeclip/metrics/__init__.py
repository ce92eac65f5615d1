"""Evaluation metrics for anomaly detection (image level) and localization (pixel level).

Modules:

* :mod:`~iqeclip.metrics.image` - image-level AUROC, AP and F1-max.
* :mod:`~iqeclip.metrics.pixel` - pixel-level AUROC and AP, and :func:`pixel_metrics`, which
  picks the exact or the binned pixel metrics by input size.
* :mod:`~iqeclip.metrics.aupro` - pixel-level AUPRO (per-region overlap up to an FPR limit).
* :mod:`~iqeclip.metrics.streaming` - :class:`PixelMetricAccumulator`, the binned streaming
  pixel metrics with memory O(bins), and their error bounds.
* :mod:`~iqeclip.metrics.compute` - :func:`compute_metrics`, all metrics together.
* :mod:`~iqeclip.metrics.inputs` - the input checks they share.
"""

from iqeclip.metrics.aupro import AUPRO_EXACT_MAX_PIXELS, pixel_aupro
from iqeclip.metrics.compute import compute_metrics
from iqeclip.metrics.image import f1_max, image_ap, image_auroc
from iqeclip.metrics.pixel import pixel_ap, pixel_auroc, pixel_metrics
from iqeclip.metrics.streaming import MapValueError, PixelMetricAccumulator

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
