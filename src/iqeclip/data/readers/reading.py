"""How a run reads its inputs (:class:`Reading`): the intensity rule, the slicing axis, the
orientation and the limits, recorded with every checkpoint's run settings and handed to every
reader; and the label values that count as anomalous in its label volumes (``--label_values``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from iqeclip.config.shared import parse_label_values
from iqeclip.data.readers.intensity import (
    DEFAULT_INTENSITY,
    Intensity,
    parse_percentile,
    parse_window,
)
from iqeclip.data.readers.limits import DEFAULT_LIMITS, Limits
from iqeclip.data.readers.orientation import ORIENTATIONS
from iqeclip.errors import UserError, param

__all__ = [
    "DEFAULT_READING",
    "Reading",
    "describe_intensity",
    "parse_label_values",
    "reading_from",
    "reading_options",
]


@dataclass(frozen=True)
class Reading:
    """How a run reads its inputs (recorded with every checkpoint's run settings).

    Attributes:
        intensity: The intensity rule (``--window`` / ``--percentile``; default: each input
            kind's own rule, see :mod:`~iqeclip.data.readers.intensity`).
        axis: The plane NIfTI volumes are sliced across (``--axis``).
        orientation: How volume slices are turned to face the model (``--orientation``,
            :mod:`~iqeclip.data.readers.orientation`).
        limits: The largest input read (:mod:`~iqeclip.data.readers.limits`; ``predict``'s
            ``--max_megapixels``...). Not part of the ``repr`` (nor of a run's identity): they
            decide which inputs are read, never how.
        label_values: The values of a label volume that count as anomalous
            (``--label_values``, sorted, each at least 1: a segmentation's labels, a DICOM-SEG's
            segment numbers); None: any non-zero value. Not part of the ``repr``: it decides
            which voxels of the ground truth count, never how an input is read (but it is
            compared, so the label volumes cached for one value set are not reused for
            another: :mod:`~iqeclip.data.readers.labels`).
    """

    intensity: Intensity = DEFAULT_INTENSITY
    axis: int = 2
    orientation: str = ORIENTATIONS[0]
    limits: Limits = field(default=DEFAULT_LIMITS, repr=False)
    label_values: tuple[int, ...] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if isinstance(self.axis, bool) or self.axis not in (0, 1, 2):
            raise UserError(f"{param('axis')} must be 0, 1 or 2, got {self.axis!r}")
        if self.orientation not in ORIENTATIONS:
            raise UserError(
                f"{param('orientation')} must be one of {', '.join(ORIENTATIONS)}, "
                f"got {self.orientation!r}"
            )
        values = self.label_values
        if values is not None and (
            not isinstance(values, tuple)
            or not values
            or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in values)
        ):
            raise UserError(
                f"{param('label_values')} must be positive whole numbers, got {values!r}"
            )


DEFAULT_READING = Reading()


def reading_from(
    window: str | None,
    percentile: str | None,
    axis: int = 2,
    orientation: str = ORIENTATIONS[0],
    label_values: str | None = None,
) -> Reading:
    """The :class:`Reading` of the options ``--window``, ``--percentile``, ``--axis``,
    ``--orientation`` and ``--label_values`` (checked: a one-line error naming the
    parameter)."""
    intensity = Intensity(
        window=parse_window(window) if window else None,
        percentile=parse_percentile(percentile) if percentile else None,
    )
    return Reading(intensity, axis, orientation, label_values=parse_label_values(label_values))


def reading_options(reading: Reading) -> dict[str, Any]:
    """A reading as the options that give it (``window``, ``percentile``, ``axis``,
    ``orientation``, ``label_values``), for a run's recorded configuration."""
    intensity = reading.intensity
    return {
        "window": None if intensity.window is None else "{:g},{:g}".format(*intensity.window),
        "percentile": (
            None if intensity.percentile is None else "{:g},{:g}".format(*intensity.percentile)
        ),
        "axis": reading.axis,
        "orientation": reading.orientation,
        "label_values": (
            None if reading.label_values is None else ",".join(map(str, reading.label_values))
        ),
    }


def describe_intensity(intensity: Intensity) -> str:
    """The rule in words, as the options spell it."""
    if intensity.window is not None:
        return "--window {:g},{:g}".format(*intensity.window)
    if intensity.percentile is not None:
        return "--percentile {:g},{:g}".format(*intensity.percentile)
    return "each input kind's default rule"
