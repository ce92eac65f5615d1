"""NRRD and MetaImage volumes, read with SimpleITK (ITK's own reader for the formats 3D Slicer,
ITK-SNAP and grand-challenge pipelines save).

:class:`ItkReader` reads ``.nrrd`` / ``.nhdr`` (NRRD, 3D Slicer's format) and ``.mha`` /
``.mhd`` (MetaImage) files. A volume is sliced by the rule of every volume
(:mod:`~iqeclip.data.readers.volume`): across the file's voxel axis closest to ``--axis``, each
slice turned into the radiological view, so the same scan as NRRD, NIfTI or a DICOM series
reaches the model as the same pictures. Maps are written back in the input's own format
(``.nrrd`` for NRRD, ``.mha`` for MetaImage) with its geometry.

ITK's physical space is LPS (x towards the patient's left, y posterior), NIfTI's and ours RAS:
:func:`ras_affine` turns an ITK geometry (origin, spacing, direction) into the RAS affine every
volume carries, and :func:`itk_image` a voxel array and a RAS affine back into an ITK image.
A Slicer segmentation (``.seg.nrrd``) is a label volume, not an image: it is read by the labels
(:mod:`~iqeclip.data.readers.labels`), and refused as an input.

SimpleITK is in the ``medical`` extra, imported only when such a file is read.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from iqeclip.data.readers.base import Slice
from iqeclip.data.readers.errors import cannot_read, need
from iqeclip.data.readers.limits import Declared
from iqeclip.data.readers.reader import FileReader
from iqeclip.data.readers.reading import Reading
from iqeclip.data.readers.volume import VolumePlan, check_axis, plan, volume_shape, volume_slices
from iqeclip.errors import first_line

__all__ = [
    "LPS",
    "METAIMAGE",
    "NRRD",
    "SEGMENTATION_SUFFIX",
    "ItkReader",
    "itk_image",
    "itk_reason",
    "itk_voxels",
    "ras_affine",
    "read_itk_header",
]

LPS = np.diag([-1.0, -1.0, 1.0, 1.0])
"""Turns LPS world coordinates into RAS ones and back (its own inverse)."""
SEGMENTATION_SUFFIX = ".seg.nrrd"
"""3D Slicer's segmentation files: label volumes, never inputs."""


def ras_affine(origin: Any, spacing: Any, direction: Any) -> np.ndarray:
    """The RAS affine (4 x 4) of an ITK geometry of 2, 3 or more dimensions (the first three
    are kept; a 2-D image lies in the plane z = 0 with a unit third axis)."""
    dim = len(spacing)
    keep = min(dim, 3)
    rotation = np.eye(3)
    rotation[:keep, :keep] = np.asarray(direction, np.float64).reshape(dim, dim)[:keep, :keep]
    steps = np.ones(3)
    steps[:keep] = np.asarray(spacing, np.float64)[:keep]
    affine = np.eye(4)
    affine[:3, :3] = rotation * steps  # column j: voxel axis j's step in LPS mm
    affine[:3, 3] = 0.0
    affine[:keep, 3] = np.asarray(origin, np.float64)[:keep]
    return LPS @ affine


def itk_image(voxels: np.ndarray, affine: np.ndarray) -> Any:
    """A SimpleITK image of ``voxels`` (2-D or 3-D, in voxel order ``(x, y[, z])``) with the
    geometry of the RAS ``affine`` (what :func:`ras_affine` reads back)."""
    import SimpleITK as sitk

    voxels = np.asarray(voxels)
    dim = voxels.ndim
    lps = LPS @ np.asarray(affine, np.float64)
    columns = lps[:3, :3]
    steps = np.linalg.norm(columns, axis=0)
    rotation = columns / np.where(steps > 0, steps, 1.0)
    image = sitk.GetImageFromArray(np.ascontiguousarray(voxels.transpose(*range(dim)[::-1])))
    image.SetSpacing([float(s) for s in steps[:dim]])
    image.SetOrigin([float(o) for o in lps[:dim, 3]])
    image.SetDirection([float(d) for d in rotation[:dim, :dim].ravel()])
    return image


def itk_voxels(image: Any) -> np.ndarray:
    """A SimpleITK image's voxels in voxel order ``(x, y[, z...][, components])``."""
    import SimpleITK as sitk

    array = sitk.GetArrayFromImage(image)
    dim = image.GetDimension()
    order = (*range(dim)[::-1], *range(dim, array.ndim))
    return np.transpose(array, order)


def read_itk_header(path: Path, what: str) -> Any:
    """The ``SimpleITK.ImageFileReader`` of ``path`` with its header read (no voxel decoded).

    Raises:
        UserError: SimpleITK missing, or ``cannot read <what> <path>: <reason>``.
    """
    sitk = need("SimpleITK", path)
    if not path.is_file():
        raise cannot_read(what, path, "no such file")
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except Exception as exc:  # ITK's message: the file's fault
        raise cannot_read(what, path, itk_reason(exc)) from None
    return reader


def sitk_pixel_name(pixel_id: int) -> str:
    """SimpleITK's name of a pixel type (``32-bit float``, ``complex of 32-bit float``...)."""
    import SimpleITK as sitk

    return str(sitk.GetPixelIDValueAsString(pixel_id))


def itk_reason(exc: Exception) -> str:
    """ITK's exception text without its source locations: the last line that says something."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    said = [line for line in lines if not line.startswith(("Exception thrown", "sitk::", "File"))]
    return first_line(Exception((said or lines or ["unreadable"])[-1]))


class ItkReader(FileReader):
    """NRRD or MetaImage files, one instance per format (see the module docstring).

    Args:
        name: The format in messages.
        suffixes: The file names it claims (header files).
        writes: The suffix a volume of maps is written with.
    """

    partial = False

    def __init__(self, name: str, suffixes: tuple[str, ...], writes: str) -> None:
        self.name, self.suffixes, self.writes = name, suffixes, writes

    def _plan(self, path: Path, reading: Reading) -> tuple[Any, VolumePlan]:
        """The file's header read and checked (nothing decoded)."""
        path = Path(path)
        check_axis(reading.axis, reading.orientation)
        if path.name.lower().endswith(SEGMENTATION_SUFFIX):
            raise cannot_read(
                self.name,
                path,
                "a 3D Slicer segmentation (labels), not an image: give it as a mask",
            )
        header = read_itk_header(path, self.name)
        if header.GetNumberOfComponents() != 1:
            raise cannot_read(
                self.name,
                path,
                f"{header.GetNumberOfComponents()} values per voxel (colour or vector): only "
                "scalar volumes are read",
            )
        if "complex" in sitk_pixel_name(header.GetPixelID()):
            raise cannot_read(self.name, path, "complex voxels: convert to magnitudes first")
        shape = volume_shape(self.name, path, tuple(header.GetSize()))
        affine = ras_affine(header.GetOrigin(), header.GetSpacing(), header.GetDirection())
        return header, plan(
            self.name, path, shape, affine, reading.axis, reading.orientation, reading.limits
        )

    def read(
        self, path: Path, reading: Reading, bad: list[tuple[Path, str]] | None = None
    ) -> list[Slice]:
        path = Path(path)
        header, volume = self._plan(path, reading)
        try:
            voxels = itk_voxels(header.Execute())
        except Exception as exc:  # a truncated file or a missing data file fails here
            raise cannot_read(self.name, path, itk_reason(exc)) from None
        voxels = voxels.reshape(volume.source_shape)
        return volume_slices(
            voxels, volume, path, reading.orientation, reading.intensity, suffix=self.writes
        )

    def declared(self, path: Path, reading: Reading) -> Declared:
        volume = self._plan(path, reading)[1]
        return Declared(volume.grid[volume.view.axis], math.prod(volume.grid))

    def mask_in(self, path: Path, masks: Path) -> Path | None:
        """The label volume of the same name, else 3D Slicer's ``<stem>.seg.nrrd``."""
        same = masks / path.name
        if same.exists():
            return same
        stem = path.name[: -len(next(s for s in self.suffixes if path.name.lower().endswith(s)))]
        segmentation = masks / f"{stem}{SEGMENTATION_SUFFIX}"
        return segmentation if segmentation.exists() else same


NRRD = ItkReader("NRRD", (".nrrd", ".nhdr"), ".nrrd")
METAIMAGE = ItkReader("MetaImage", (".mha", ".mhd"), ".mha")
