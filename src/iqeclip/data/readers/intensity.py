"""Intensity rules: how a reader's raw values become [0, 1] greys (:class:`Intensity`), per slice.

- an explicit ``window=(centre, width)`` maps ``clip((x - (c - w/2)) / w, 0, 1)`` (for CT: in HU);
- else an explicit ``percentile=(lo, hi)`` clips to those percentiles of the slice, then min-max;
- else the source's default: DICOM uses the file's Window Center/Width (first value when
  multi-valued; per-frame values of enhanced multi-frame files win; ``VOILUTFunction`` SIGMOID is
  honoured), else its VOI LUT Sequence, else min-max; NIfTI and float images use min-max;
  16/32-bit integer images the full 16-bit range (``v / 65535``) and 8-bit images ``v / 255``,
  so both match ``load_image`` exactly.

Colour sources (RGB, YBR, PALETTE COLOR DICOM; RGB images) are min-max normalised jointly over
their three channels (or percentile-clipped); windows do not apply to them.

Non-finite values (NaN, +-inf) are replaced by the slice's finite minimum and counted in
:attr:`Levels.nonfinite`. A slice without any finite value, or a constant one, gives zeros (a
window still maps a constant slice to its windowed grey) and :attr:`Levels.constant`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from iqeclip.errors import UserError, param

__all__ = [
    "DEFAULT_INTENSITY",
    "Default",
    "Intensity",
    "Levels",
    "linear_window",
    "normalise",
    "parse_percentile",
    "parse_window",
    "sigmoid_window",
]

_WINDOW_HELP = f"{param('window')} expects CENTRE,WIDTH with a positive width (e.g. 40,400)"
_PERCENTILE_HELP = f"{param('percentile')} expects LOW,HIGH with 0 <= LOW < HIGH <= 100 (e.g. 1,99)"


@dataclass(frozen=True)
class Intensity:
    """How raw values become [0, 1] greys (see the module docstring).

    Attributes:
        window: (centre, width), e.g. (40, 400) for a CT soft-tissue window in HU; overrides the
            file's window / VOI LUT.
        percentile: (low, high) percentiles, e.g. (1, 99) for MRI: clip, then min-max.

    Raises:
        UserError: A non-positive width, percentiles outside 0 <= low < high <= 100, or both
            options at once.
    """

    window: tuple[float, float] | None = None
    percentile: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        if self.window is not None and self.percentile is not None:
            raise UserError(f"{param('window')} and {param('percentile')} cannot be used together")
        if self.window is not None:
            c, w = _two_floats(self.window, _WINDOW_HELP)
            if not w > 0:
                raise UserError(f"{_WINDOW_HELP}, got {self.window!r}")
            object.__setattr__(self, "window", (c, w))
        if self.percentile is not None:
            lo, hi = _two_floats(self.percentile, _PERCENTILE_HELP)
            if not 0.0 <= lo < hi <= 100.0:
                raise UserError(f"{_PERCENTILE_HELP}, got {self.percentile!r}")
            object.__setattr__(self, "percentile", (lo, hi))


DEFAULT_INTENSITY = Intensity()
"""No options: each source's own default rule (the readers' default ``intensity``)."""


@dataclass(frozen=True)
class Levels:
    """How one slice's raw values became [0, 1] (what :func:`normalise` did).

    Attributes:
        rule: ``"window"``, ``"percentile"``, ``"file-window"``, ``"voi-lut"``, ``"minmax"``,
            ``"8bit"``, ``"fullrange16"`` or ``"none"`` (no finite value).
        window: The (centre, width) applied, or None.
        constant: The slice holds one value (or none that is finite): it reads as one grey.
        nonfinite: Its non-finite values (NaN, +-inf), replaced by its finite minimum.
        raw: The smallest and largest finite raw value (HU for CT), None without any.
    """

    rule: str = "minmax"
    window: tuple[float, float] | None = None
    constant: bool = False
    nonfinite: int = 0
    raw: tuple[float, float] | None = None


def _two_floats(values: Any, help_text: str, shown: Any = None) -> tuple[float, float]:
    """Two finite floats from a pair, else ``UserError("<help_text>, got <shown>")``."""
    shown = values if shown is None else shown
    try:
        a, b = (float(v) for v in values)
    except (TypeError, ValueError):
        raise UserError(f"{help_text}, got {shown!r}") from None
    if not (math.isfinite(a) and math.isfinite(b)):
        raise UserError(f"{help_text}, got {shown!r}")
    return a, b


def parse_window(text: str) -> tuple[float, float]:
    """Parse a ``--window`` value.

    Args:
        text: ``"CENTRE,WIDTH"``, e.g. ``"40,400"`` or ``"-600,1500"``.

    Returns:
        (centre, width) as floats.

    Raises:
        UserError: Naming ``--window`` for anything else or a non-positive width.
    """
    parts = str(text).split(",")
    if len(parts) != 2:
        raise UserError(f"{_WINDOW_HELP}, got {text!r}")
    centre, width = _two_floats(parts, _WINDOW_HELP, text)
    if not width > 0:
        raise UserError(f"{_WINDOW_HELP}, got {text!r}")
    return centre, width


def parse_percentile(text: str) -> tuple[float, float]:
    """Parse a ``--percentile`` value.

    Args:
        text: ``"LOW,HIGH"``, e.g. ``"1,99"``.

    Returns:
        (low, high) as floats with 0 <= low < high <= 100.

    Raises:
        UserError: Naming ``--percentile`` for anything else.
    """
    parts = str(text).split(",")
    if len(parts) != 2:
        raise UserError(f"{_PERCENTILE_HELP}, got {text!r}")
    lo, hi = _two_floats(parts, _PERCENTILE_HELP, text)
    if not 0.0 <= lo < hi <= 100.0:
        raise UserError(f"{_PERCENTILE_HELP}, got {text!r}")
    return lo, hi


Default = tuple[str, Callable[[np.ndarray], np.ndarray]]
"""A source's own rule, used when no option is given: (rule name, function to [0, 1])."""


def linear_window(x: np.ndarray, centre: float, width: float) -> np.ndarray:
    """The linear window ``clip((x - (centre - width / 2)) / width, 0, 1)``."""
    return np.clip((x - (centre - width / 2.0)) / width, 0.0, 1.0)


def sigmoid_window(x: np.ndarray, centre: float, width: float) -> np.ndarray:
    """DICOM's SIGMOID VOI LUT function ``1 / (1 + exp(-4 (x - centre) / width))``."""
    return 1.0 / (1.0 + np.exp(np.clip(-4.0 * (x - centre) / width, -700.0, 700.0)))


def normalise(
    values: np.ndarray,
    intensity: Intensity,
    default: Default | None = None,
    window_used: tuple[float, float] | None = None,
) -> tuple[np.ndarray, Levels]:
    """Map raw values of one slice to [0, 1].

    Args:
        values: Raw values, any shape ((H, W) or (H, W, 3)), any numeric dtype.
        intensity: Explicit options; they win over ``default``.
        default: (rule name, function to [0, 1]) used when no option is given; min-max if None.
        window_used: The file window behind ``default``, recorded in the :class:`Levels`.

    Returns:
        (float32 image of the same shape in [0, 1], its :class:`Levels`).
    """
    x = np.asarray(values, dtype=np.float64)
    finite = np.isfinite(x)
    n_bad = int(x.size - np.count_nonzero(finite))
    if n_bad:
        if n_bad == x.size:
            return np.zeros(x.shape, dtype=np.float32), Levels("none", None, True, n_bad)
        x = np.where(finite, x, x[finite].min())
    lo, hi = (float(x.min()), float(x.max())) if x.size else (0.0, 0.0)
    levels = Levels(constant=not hi > lo, nonfinite=n_bad, raw=(lo, hi) if x.size else None)

    out: np.ndarray | None = None
    if intensity.window is not None:
        out = linear_window(x, *intensity.window)
        levels = replace(levels, rule="window", window=intensity.window)
    elif intensity.percentile is not None:
        p_lo, p_hi = (float(v) for v in np.percentile(x, intensity.percentile))
        if p_hi > p_lo:
            out = (np.clip(x, p_lo, p_hi) - p_lo) / (p_hi - p_lo)
            levels = replace(levels, rule="percentile")
    elif default is not None:
        name, function = default
        out = function(x)
        levels = replace(levels, rule=name, window=window_used)
    if out is None:  # min-max (also the fallback for degenerate percentiles)
        out = np.zeros_like(x) if levels.constant else (x - lo) / (hi - lo)
    image = np.ascontiguousarray(np.clip(out, 0.0, 1.0), dtype=np.float32)
    return image, levels
