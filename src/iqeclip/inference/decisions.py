"""Every decision predict makes, in one place, on full-precision numbers: an image's or slice's
(score >= the calibrated image threshold), a pixel's (map >= the pixel threshold) and a
volume's (its volume score >= the calibrated volume threshold, else the image threshold).

A constant slice is :data:`BLANK`: no score, no decision; a non-finite score or map is never
decided on (:func:`nonfinite`). Scores and thresholds are written exactly (:func:`exact`), so
the CSV files reproduce every decision.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from iqeclip.errors import UserError, param
from iqeclip.inference.thresholds import describe, volume_aggregate

BLANK = "blank"
"""The decision of a constant slice (and of a volume with only such slices)."""


def exact(value: float) -> str:
    """A score or threshold as the shortest text that reads back as the same double."""
    return repr(float(value))


def decide(score: float, threshold: float | None) -> str:
    """``abnormal`` when ``score >= threshold`` (full precision), ``normal``, or "" without a
    threshold."""
    if threshold is None:
        return ""
    return "abnormal" if score >= threshold else "normal"


def pixel_mask(amap: np.ndarray, threshold: float) -> np.ndarray:
    """The pixels of a map at or above the pixel threshold (full precision)."""
    return amap >= threshold


def nonfinite(results: Sequence[tuple[Any, torch.Tensor, float]]) -> str | None:
    """Why an input's scored items ``(item, map, score)`` cannot be decided on (a NaN or
    infinite score or map value of a slice that is not blank), or None."""
    for item, amap, score in results:
        if not item.blank and not (math.isfinite(score) and bool(torch.isfinite(amap).all())):
            where = "" if item.index is None else f" of slice {item.index}"
            return f"the model gave a non-finite score or map{where} (NaN or infinite): no decision"
    return None


def _number(value: Any) -> float | None:
    return None if value is None else float(value)


@dataclass(frozen=True)
class Decisions:
    """The thresholds of a run and the rules that apply them.

    Attributes:
        threshold: the image threshold (None: not calibrated, scores only).
        rule: how it was calibrated (:func:`~iqeclip.inference.thresholds.describe`), or "".
        pixel: the pixel threshold, or None.
        volume_score: the volume score rule (``max`` or ``topk:K``).
        volume_threshold: the threshold of volume scores (the calibrated one, else the image
            threshold).
    """

    threshold: float | None
    rule: str
    pixel: float | None
    volume_score: str
    volume_threshold: float | None

    @classmethod
    def of(cls, thresholds: dict[str, Any] | None, volume_score: str | None) -> Decisions:
        """The decisions of a checkpoint's calibration (``meta["thresholds"]``), with the volume
        rule asked for.

        Raises:
            UserError: ``volume_score`` is not a rule, or differs from the rule the volume
                threshold was calibrated for (that threshold would not mean anything for it).
        """
        thresholds = thresholds or {}
        image = _number(thresholds.get("image"))
        calibrated = thresholds.get("volume")
        if calibrated is None:
            rule, volume = volume_score or "max", image
        elif volume_score is not None and volume_score != calibrated["score"]:
            raise UserError(
                f"{param('volume_score')} {volume_score}: the checkpoint's volume threshold was "
                f"calibrated for {param('volume_score')} {calibrated['score']}; use that, or "
                f"calibrate again with {param('volume_score')} {volume_score}"
            )
        else:
            rule, volume = calibrated["score"], float(calibrated["threshold"])
        volume_aggregate(rule)  # checked before any work
        return cls(
            image,
            describe(thresholds) if thresholds else "",
            _number(thresholds.get("pixel")),
            rule,
            volume,
        )

    @property
    def aggregate(self) -> Callable[[np.ndarray], float]:
        return volume_aggregate(self.volume_score)

    def image(self, score: float) -> str:
        """The decision of an image or slice score."""
        return decide(score, self.threshold)

    def mask(self, amap: np.ndarray) -> np.ndarray:
        """The pixels at or above the pixel threshold (needs one)."""
        assert self.pixel is not None
        return pixel_mask(amap, self.pixel)

    def volume(self, scores: Sequence[float]) -> tuple[float | None, str]:
        """A volume's score (the rule's of the scores of its slices that are not blank) and its
        decision; None and ``blank`` when every slice is blank."""
        if not scores:
            return None, BLANK
        score = self.aggregate(np.array(scores))
        return score, decide(score, self.volume_threshold)
