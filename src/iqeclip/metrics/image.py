"""Image-level metrics of per-image anomaly scores.

* :func:`image_auroc` - area under the ROC curve of per-image anomaly scores.
* :func:`image_ap` - average precision of per-image anomaly scores.
* :func:`f1_max` - the best F1 score over all thresholds.

AUROC, AP and the precision-recall curve come from scikit-learn.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score

from iqeclip.metrics.inputs import _image_inputs

__all__ = ["f1_max", "image_ap", "image_auroc"]


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
