"""Decision thresholds: turn scores into normal/abnormal, and store the rule in the checkpoint.

Two rules, for image scores and (where masks exist) for pixel maps:

* ``target_fpr``: the threshold lets at most ``floor(fpr * n)`` of the ``n`` normal scores reach
  it, i.e. the false-positive rate on the calibration normals is at most ``fpr``;
* ``f1``: the threshold of maximal F1 on labelled calibration data.

A score is called abnormal when ``score >= threshold``. A volume's score is ``max`` or ``topk:K``
of its slice scores (:func:`volume_aggregate`). A stored calibration is checked when a detector
is loaded (:func:`check_thresholds`): a NaN threshold would call every input normal.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NoReturn

import numpy as np
from sklearn.metrics import precision_recall_curve

from iqeclip.errors import UserError, param


def fpr_threshold(normal_scores: np.ndarray, target_fpr: float) -> float:
    """The smallest threshold at which at most ``floor(target_fpr * n)`` normal scores are
    ``>=`` it (ties count against the threshold, so the bound holds with ties too).

    Args:
        normal_scores: ``(n,)`` scores of normal samples.
        target_fpr: allowed false-positive rate in [0, 1).
    """
    if not 0.0 <= target_fpr < 1.0:
        raise UserError(f"{param('target_fpr')} must be in [0, 1), got {target_fpr}")
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
        raise UserError(f"{param('f1')} calibration needs normal and abnormal examples")
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
    """Threshold by ``rule`` (``target_fpr`` uses the label-0 scores, ``f1`` all).

    Raises:
        UserError: a score is NaN or infinite (the threshold would be too).
    """
    bad = int((~np.isfinite(np.asarray(scores, np.float64))).sum())
    if bad:
        raise UserError(
            f"calibrate: {bad} of the {np.size(scores)} calibration scores are NaN or infinite; "
            "no threshold is stored"
        )
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


def volume_aggregate(spec: str) -> Callable[[np.ndarray], float]:
    """``max`` or ``topk:K`` (the mean of the K highest slice scores), checked before any work."""
    if spec == "max":
        return lambda scores: float(scores.max())
    head, _, k = spec.partition(":")
    if head == "topk" and k.isascii() and k.isdigit() and int(k) >= 1:
        return lambda scores: float(np.sort(scores)[::-1][: int(k)].mean())
    raise UserError(
        f"{param('volume_score')} {spec!r}: use max or topk:K with K >= 1 (e.g. topk:3)"
    )


def check_thresholds(thresholds: Any, where: str) -> None:
    """Refuse a stored calibration (``meta["thresholds"]`` of a checkpoint or an ONNX model)
    that predict could not decide or report with: every threshold (``image``, ``pixel``,
    ``volume.threshold``) must be a finite number (not a string, not a bool), ``volume.score`` a
    volume rule, and the fields :func:`describe` reads must be there. ``None``: not calibrated.

    Raises:
        UserError: ``<where>: the stored calibration is corrupt: thresholds.<key> ...``.
    """
    if thresholds is None:
        return

    def refuse(key: str, why: str) -> NoReturn:
        raise UserError(f"{where}: the stored calibration is corrupt: thresholds{key} {why}")

    def number(key: str, value: Any) -> None:
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not math.isfinite(value)
        ):
            refuse(key, f"is {value!r}, not a finite number")

    if not isinstance(thresholds, dict):
        refuse("", f"is {type(thresholds).__name__}, not a JSON object")
    number(".image", thresholds.get("image"))
    if thresholds.get("pixel") is not None:
        number(".pixel", thresholds["pixel"])
    volume = thresholds.get("volume")
    if volume is not None:
        if not isinstance(volume, dict):
            refuse(".volume", f"is {type(volume).__name__}, not a JSON object")
        number(".volume.threshold", volume.get("threshold"))
        score = volume.get("score")
        try:
            volume_aggregate(score if isinstance(score, str) else "")
        except UserError:
            refuse(".volume.score", f"is {score!r}, not a volume rule (max or topk:K)")
    if thresholds.get("rule") not in ("target_fpr", "f1"):
        refuse(".rule", f"is {thresholds.get('rule')!r}, not target_fpr or f1")
    if thresholds["rule"] == "target_fpr":
        number(".target_fpr", thresholds.get("target_fpr"))
    for key in ("n_images", "source"):
        if key not in thresholds:
            refuse(f".{key}", "is missing")
