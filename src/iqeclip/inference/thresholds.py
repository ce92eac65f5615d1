"""Decision thresholds: turn scores into normal/abnormal, and store the rule in the checkpoint.

Two rules, for image scores and (where masks exist) for pixel maps:

* ``target_fpr``: the threshold lets at most ``floor(fpr * n)`` of the ``n`` normal scores reach
  it, i.e. the false-positive rate on the calibration normals is at most ``fpr``;
* ``f1``: the threshold of maximal F1 on labelled calibration data.

A score is called abnormal when ``score >= threshold``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from sklearn.metrics import precision_recall_curve

from iqeclip.errors import UserError


def fpr_threshold(normal_scores: np.ndarray, target_fpr: float) -> float:
    """The smallest threshold at which at most ``floor(target_fpr * n)`` normal scores are
    ``>=`` it (ties count against the threshold, so the bound holds with ties too).

    Args:
        normal_scores: ``(n,)`` scores of normal samples.
        target_fpr: allowed false-positive rate in [0, 1).
    """
    if not 0.0 <= target_fpr < 1.0:
        raise UserError(f"--target_fpr must be in [0, 1), got {target_fpr}")
    scores = np.sort(np.asarray(normal_scores, dtype=np.float64))[::-1]
    if scores.size == 0:
        raise UserError("calibration needs at least one normal image")
    allowed = math.floor(target_fpr * scores.size)
    # just above the (allowed + 1)-th highest normal score: only the `allowed` highest reach it
    return float(np.nextafter(scores[allowed], np.inf))


def f1_threshold(scores: np.ndarray, labels: np.ndarray) -> float:
    """The threshold of maximal F1 (``score >= threshold`` is abnormal)."""
    labels = np.asarray(labels).astype(bool)
    if labels.all() or not labels.any():
        raise UserError("--f1 calibration needs normal and abnormal examples")
    precision, recall, thresholds = precision_recall_curve(labels, np.asarray(scores, np.float64))
    f1 = np.divide(
        2 * precision * recall,
        precision + recall,
        out=np.zeros_like(precision),
        where=(precision + recall) > 0,
    )
    return float(thresholds[int(np.argmax(f1[:-1]))])


def calibrate(
    scores: np.ndarray,
    labels: np.ndarray,
    rule: str,
    target_fpr: float = 0.05,
) -> float:
    """Threshold by ``rule`` (``target_fpr`` uses the label-0 scores, ``f1`` all)."""
    if rule == "target_fpr":
        return fpr_threshold(np.asarray(scores)[np.asarray(labels) == 0], target_fpr)
    if rule == "f1":
        return f1_threshold(scores, labels)
    raise ValueError(f"unknown calibration rule {rule!r}")


def describe(thresholds: dict[str, Any]) -> str:
    """A one-line description of a stored calibration, for logs and the CSV."""
    rule = thresholds["rule"]
    how = f"FPR <= {thresholds['target_fpr']:g}" if rule == "target_fpr" else "max F1"
    return f"{how} on {thresholds['n_images']} calibration images ({thresholds['source']})"
