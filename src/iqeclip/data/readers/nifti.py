"""NIfTI images (``.nii`` / ``.nii.gz``) as 2-D slices along one axis.

A 3-D volume is sliced along the file's voxel axis closest to the world axis ``--axis`` (0
sagittal, 1 coronal, 2 axial, the default), in the file's own order, and each slice is turned
into the radiological view (:mod:`iqeclip.data.readers.orientation`): the same scan stored RAS,
LPS or with its axes permuted, or as a DICOM series, gives the same pictures. A slice's
``index`` is the file's voxel index along the slicing axis, and its
:class:`~iqeclip.data.readers.base.Geometry` puts a map back into the file's voxel order
(:meth:`~iqeclip.data.readers.orientation.View.put`), to be written with the source file's
affine and header. The default intensity rule is min-max per slice (see
:mod:`iqeclip.data.readers.intensity`). :class:`NiftiReader` reads ``.nii`` and ``.nii.gz``
files; a volume's label volume is the file of the same name in the ``--masks`` folder.

nibabel (the optional extra) is imported only when a NIfTI file is read.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from iqeclip.data.readers.base import Slice
from iqeclip.data.readers.errors import cannot_read, need
from iqeclip.data.readers.intensity import DEFAULT_INTENSITY, Intensity
from iqeclip.data.readers.limits import DEFAULT_LIMITS, Declared, Limits
from iqeclip.data.readers.reader import FileReader
from iqeclip.data.readers.reading import Reading
from iqeclip.data.readers.volume import VolumePlan, check_axis, plan, volume_shape, volume_slices
from iqeclip.errors import first_line

__all__ = ["NIFTI_SUFFIXES", "NiftiReader", "nifti_header", "read_nifti"]

NIFTI_SUFFIXES: tuple[str, ...] = (".nii", ".nii.gz")
"""Names of NIfTI files."""


class _Header(NamedTuple):
    """What a NIfTI file's header says, before any voxel is read."""

    img: Any  # the nibabel image (its data not read)
    volume: VolumePlan


def _header(path: Path, axis: int, orientation: str, limits: Limits) -> _Header:
    """Read a NIfTI header and check it (the errors of :func:`read_nifti`), the slices' size,
    their count and their voxels together against ``limits`` included: no voxel is read."""
    path = Path(path)
    check_axis(axis, orientation)
    nib = need("nibabel", path)
    if not path.is_file():
        raise cannot_read("NIfTI", path, "no such file")
    try:
        img = nib.load(str(path))  # the header; the voxels are read by get_fdata
        dtype = np.dtype(img.get_data_dtype())
        file_shape = tuple(int(n) for n in img.shape)
        affine = np.asarray(img.affine, dtype=np.float64)
    except Exception as exc:  # any parser failure is a problem with the user's file
        raise cannot_read("NIfTI", path, first_line(exc)) from None
    if dtype.kind == "c" or dtype.names is not None:
        raise cannot_read(
            "NIfTI",
            path,
            f"its voxels are {dtype} ({'complex' if dtype.kind == 'c' else 'compound'} values), "
            "not an image: convert it to real magnitudes first",
        )
    shape = volume_shape("NIfTI", path, file_shape)
    return _Header(img, plan("NIfTI", path, shape, affine, axis, orientation, limits))


def nifti_header(
    path: Path,
    axis: int = 2,
    orientation: str = "radiological",
    limits: Limits = DEFAULT_LIMITS,
) -> Declared:
    """The slices :func:`read_nifti` would give and their voxels, from the header alone,
    checked against ``limits`` (the errors of :func:`read_nifti` before any voxel is read)."""
    volume = _header(path, axis, orientation, limits).volume
    return Declared(volume.grid[volume.view.axis], math.prod(volume.grid))


def read_nifti(
    path: Path,
    axis: int = 2,
    intensity: Intensity = DEFAULT_INTENSITY,
    orientation: str = "radiological",
    limits: Limits = DEFAULT_LIMITS,
) -> list[Slice]:
    """Read a NIfTI image (``.nii`` / ``.nii.gz``) as 2-D slices along one axis.

    Values are ``get_fdata(dtype=float32)`` (scl_slope/scl_inter applied). The slices are taken
    along the file's voxel axis closest to the world axis ``axis`` (0 sagittal, 1 coronal, 2
    axial; with ``"native"``, the voxel axis ``axis`` itself), in the file's order, and each is
    turned into the view of ``orientation`` (:mod:`~iqeclip.data.readers.orientation`). A 2-D
    image is one slice across its third (implicit) voxel axis. Trailing singleton dimensions
    beyond the third (a 4-D file with one volume) are dropped.

    Args:
        path: The NIfTI file.
        axis: The plane to slice (0, 1 or 2; negative values count from the end). Ignored for
            2-D images.
        intensity: Window / percentile options (default: min-max per slice).
        orientation: One of :data:`~iqeclip.data.readers.orientation.ORIENTATIONS`.
        limits: The largest volume read: a slice's size, the slices and their voxels together,
            checked from the header before any voxel is read.

    Returns:
        One (H, W) float32 :class:`Slice` per file slice, ``index`` the file's voxel index along
        the slicing axis (None for a 2-D image), ``slice_mm`` where it lies
        (:func:`~iqeclip.data.readers.orientation.slice_position_mm`); all share the volume's
        :class:`~iqeclip.data.readers.base.Geometry`: the file's affine and header, ``grid`` (the
        3-D voxel grid the slices are taken from), ``source_shape`` (the file's shape without
        trailing singleton axes) and the ``view`` (its ``axis`` and
        :meth:`~iqeclip.data.readers.orientation.View.put` write a map back).

    Raises:
        UserError: nibabel missing, ``cannot read NIfTI <path>: <reason>`` for a missing or
            garbage file, complex values, a 4-D image with several volumes or an affine without
            an orientation (unless ``"native"``), a bad axis (naming ``--axis``) or orientation
            (naming ``--orientation``), or a volume over ``limits``
            (:class:`~iqeclip.data.readers.limits.OverLimit`).
    """
    path = Path(path)
    img, volume = _header(path, axis, orientation, limits)
    try:
        data = np.asarray(img.get_fdata(dtype=np.float32))
    except Exception as exc:  # a truncated file fails here
        raise cannot_read("NIfTI", path, first_line(exc)) from None
    return volume_slices(data, volume, path, orientation, intensity, img.header)


class NiftiReader(FileReader):
    """NIfTI files (:func:`read_nifti`): a volume's slices across ``--axis``."""

    name = "nifti"
    suffixes = NIFTI_SUFFIXES

    def read(
        self, path: Path, reading: Reading, bad: list[tuple[Path, str]] | None = None
    ) -> list[Slice]:
        return read_nifti(
            path, reading.axis, reading.intensity, reading.orientation, reading.limits
        )

    def declared(self, path: Path, reading: Reading) -> Declared:
        return nifti_header(path, reading.axis, reading.orientation, reading.limits)

    def mask_in(self, path: Path, masks: Path) -> Path | None:
        return masks / path.name
