"""What ``predict`` returns: its predictions as values (:class:`Predictions`), before and apart
from any file.

A :class:`SlicePrediction` is one row of ``predictions.csv`` (one 2-D input, or one slice of a
volume) with its numbers at full precision, and, when the run keeps them, the anomaly map at the
input's size and the picture the model saw; a :class:`VolumePrediction` is one row of
``volumes.csv``. ``row()`` is the row as text, exactly as the CSV files hold it
(:mod:`~iqeclip.inference.writers` writes them).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from iqeclip.data.validate import Skipped
from iqeclip.inference.decisions import BLANK, exact, pixel_mask

__all__ = ["Predictions", "SlicePrediction", "VolumePrediction"]


@dataclass
class SlicePrediction:
    """One scored 2-D input or slice (a row of ``predictions.csv``, see
    :data:`~iqeclip.inference.writers.CSV_COLUMNS` for what each field means).

    Attributes:
        score: the image score; None for a blank (constant) slice.
        decision: ``normal``, ``abnormal``, ``blank`` or "" (no threshold).
        files: the files written for it, by output kind (``overlay``, ``npy``, ...; a volume's
            ``anomaly`` and ``volume_mask`` on the row of the slice that completed it).
        input: the input it came from (the row order of the CSV, not written).
        group: the volume's place within its input (the row order, not written).
        map: the anomaly map at the input's size, ``(H, W)`` float32 in [0, 1], when the run
            keeps maps (``predict(keep_maps=True)``, the default without ``out``); None else.
        display: the picture as the model saw it, ``(H, W, 3)`` uint8, when maps are kept.
    """

    path: str
    slice: int | None
    slice_mm: float | None
    score: float | None
    decision: str
    threshold: float | None
    rule: str
    source: str
    sop_instance_uid: str = ""
    series_instance_uid: str = ""
    files: dict[str, str] = field(default_factory=dict)
    input: str = ""
    group: int = 0
    map: np.ndarray | None = field(default=None, repr=False, compare=False)
    display: np.ndarray | None = field(default=None, repr=False, compare=False)

    @property
    def blank(self) -> bool:
        return self.decision == BLANK

    def row(self, internal: bool = False) -> dict[str, Any]:
        """The CSV row as text; ``internal`` adds ``_input`` and ``_group`` (``--resume``)."""
        row = {
            "path": self.path,
            "slice": "" if self.slice is None else self.slice,
            "slice_mm": "" if self.slice_mm is None else f"{self.slice_mm:.4f}",
            "score": "" if self.score is None else exact(self.score),
            "decision": self.decision,
            "threshold": "" if self.threshold is None else exact(self.threshold),
            "rule": self.rule,
            "source": self.source,
            "sop_instance_uid": self.sop_instance_uid,
            "series_instance_uid": self.series_instance_uid,
            "outputs": ";".join(self.files.values()),
        }
        if internal:
            row.update(_input=self.input, _group=self.group)
        return row


@dataclass(frozen=True)
class VolumePrediction:
    """One input with slices (a volume, a series, a multi-frame file): a row of
    ``volumes.csv``. ``score`` is None (and ``decision`` ``blank``) when every slice is blank."""

    path: str
    n_slices: int
    n_blank: int
    score: float | None
    decision: str
    threshold: float | None
    abnormal_slices: tuple[int, ...]

    def row(self) -> dict[str, Any]:
        """The CSV row as text."""
        return {
            "path": self.path,
            "n_slices": self.n_slices,
            "n_blank": self.n_blank,
            "score": "" if self.score is None else exact(self.score),
            "decision": self.decision,
            "threshold": "" if self.threshold is None else exact(self.threshold),
            "abnormal_slices": ";".join(map(str, self.abnormal_slices)),
        }


@dataclass
class Predictions:
    """Everything a predict run found, in input order.

    Attributes:
        slices: one per 2-D input or slice, in the order of ``predictions.csv``.
        volumes: one per input with slices, in the order of ``volumes.csv``.
        skipped: the inputs left out (``on_bad_input="skip"``), with why.
        out: the folder the files were written to; None when nothing was written.
        pixel_threshold: the calibrated pixel threshold (masks are ``map >= it``), or None.
    """

    slices: list[SlicePrediction]
    volumes: list[VolumePrediction]
    skipped: list[Skipped]
    out: Path | None = None
    pixel_threshold: float | None = None

    def mask(self, prediction: SlicePrediction) -> np.ndarray | None:
        """A kept map's binary mask (``map >= pixel threshold``), as the mask files hold it;
        None without a pixel threshold or a kept map."""
        if self.pixel_threshold is None or prediction.map is None:
            return None
        return pixel_mask(prediction.map, self.pixel_threshold)
