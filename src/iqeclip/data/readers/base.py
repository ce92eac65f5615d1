"""What every reader returns: the typed :class:`Slice`.

A slice carries what was read about it in typed fields: its
:class:`~iqeclip.data.readers.intensity.Levels` (the intensity rule applied), where it lies
(``slice_mm``), the :class:`Geometry` of the volume it belongs to (a NIfTI file, a DICOM series
with geometry) and, for DICOM, its :class:`DicomInfo`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from iqeclip.data.readers.intensity import Levels
from iqeclip.data.readers.orientation import View

__all__ = ["DicomInfo", "Geometry", "Slice"]


@dataclass(frozen=True, eq=False)
class Geometry:
    """The voxel grid a volume's slices are taken from: where they lie, and the way back.

    Attributes:
        grid: The 3-D grid (a NIfTI file's own, ``(x, y, 1)`` for a 2-D image; a DICOM series'
            ``(columns, rows, slices)``, the grid ITK reads).
        affine: The grid's RAS affine (4 x 4).
        view: The slicing axis and how each slice was turned
            (:meth:`~iqeclip.data.readers.orientation.View.put` writes a map back).
        orientation: The rule ``view`` follows (:data:`~iqeclip.data.readers.orientation.ORIENTATIONS`).
        source_shape: The shape a volume of maps is written in (the file's, without trailing
            singleton axes beyond the third; the grid for a series).
        header: The NIfTI header maps are written with; None for a DICOM series (then the
            affine is written as scanner coordinates in mm) and an ITK file.
        suffix: The file format a volume of maps is written in, by its suffix: the source's own
            (``.nii.gz`` for NIfTI and DICOM, ``.nrrd`` for NRRD, ``.mha`` for MetaImage), so
            that source and maps open together in a viewer.
    """

    grid: tuple[int, ...]
    affine: np.ndarray
    view: View
    orientation: str
    source_shape: tuple[int, ...]
    header: Any = None
    suffix: str = ".nii.gz"


@dataclass(frozen=True)
class DicomInfo:
    """A DICOM slice's identity and how its values were read.

    Attributes:
        sop_instance_uid, series_uid: Its SOPInstanceUID and SeriesInstanceUID (None if absent).
        series_number, instance: SeriesNumber and InstanceNumber (None if absent).
        position: ImagePositionPatient (None if missing or unreadable).
        modality, photometric: Modality and PhotometricInterpretation (None if absent).
        rescale: The modality transform's ``(slope, intercept)``, None for a LUT or none.
        frame: The frame within a multi-frame file, None for a single-frame one.
        frames: The frames of its file.
        series: The folder, for a slice of a series folder.
        volume_id: The volume within that folder: its SeriesInstanceUID, with ``#2``, ``#3``...
            for the parts of a series split by patient, study, frame of reference or plane.
    """

    sop_instance_uid: str | None
    series_uid: str | None
    series_number: float | None
    instance: float | None
    position: tuple[float, ...] | None
    modality: str | None
    photometric: str | None
    rescale: tuple[float, float] | None
    frame: int | None
    frames: int
    series: Path | None = None
    volume_id: str | None = None


@dataclass
class Slice:
    """One 2-D image ready for the detector.

    Attributes:
        image: float32 in [0, 1], shape (H, W) for grey sources or (H, W, 3) for colour ones.
        source: The file it came from (for a DICOM series: the slice's own file).
        index: Slice/frame/page index within a volume, multi-frame file or series; None for a
            plain 2-D image.
        levels: How its raw values became [0, 1] (the rule, the window, constant, non-finite).
        slice_mm: Where it lies along its slicing axis (RAS mm), None without geometry.
        geometry: The volume it belongs to, None for a picture without one.
        dicom: A DICOM slice's :class:`DicomInfo`, else None.
    """

    image: np.ndarray
    source: Path
    index: int | None
    levels: Levels = field(default_factory=Levels)
    slice_mm: float | None = None
    geometry: Geometry | None = None
    dicom: DicomInfo | None = None
