"""What every reader shares: the :class:`Slice` it returns and the lazy
import of the optional packages.

pydicom and nibabel are an optional extra (``pip install 'iqeclip[medical]'``); :func:`need`
imports one only when a DICOM or NIfTI file is read, and a missing one is a one-line
:class:`UserError` that names :data:`INSTALL_HINT`.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from iqeclip.errors import UserError

__all__ = ["INSTALL_HINT", "Slice", "need"]

INSTALL_HINT = "pip install 'iqeclip[medical]'"
"""How to install the optional DICOM / NIfTI packages (named in their missing-package errors)."""


@dataclass
class Slice:
    """One 2-D image ready for the detector.

    Attributes:
        image: float32 in [0, 1], shape (H, W) for grey sources or (H, W, 3) for colour ones.
        source: The file it came from (for a DICOM series: the slice's own file).
        index: Slice/frame/page index within a volume, multi-frame file or series; None for a
            plain 2-D image.
        meta: Metadata. Always ``nonfinite`` (int), ``constant`` (bool), ``intensity`` (the rule
            used: ``"window"``, ``"percentile"``, ``"file-window"``, ``"voi-lut"``, ``"minmax"``,
            ``"8bit"``, ``"fullrange16"`` or ``"none"``) and ``window`` ((centre, width) used,
            or None). DICOM adds
            ``modality``, ``photometric``, ``rescale`` ((slope, intercept) or None), ``frame``,
            ``frames``, ``instance``, ``position``, ``series_uid`` (and ``series``, the folder,
            for a series); NIfTI adds the source's ``affine`` (4x4), ``header``, ``file_shape``
            and ``source_shape``, the sliced array's ``shape``, ``array_affine``, ``axis`` and
            ``orientation``, and the nibabel transforms ``ornt`` / ``to_source`` that
            :func:`~iqeclip.data.readers.nifti.to_source_order` uses to put maps back; PIL images
            add ``mode``.
    """

    image: np.ndarray
    source: Path
    index: int | None
    meta: dict[str, Any] = field(default_factory=dict)


def need(module: str, path: Path) -> ModuleType:
    """Import an optional dependency or raise the install hint."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise UserError(f"reading {path} needs {module}: {INSTALL_HINT}") from None
