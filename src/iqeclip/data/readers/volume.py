"""A volume with a world geometry as 2-D slices: the one rule every volume file format follows
(NIfTI, NRRD, MetaImage).

A format's reader reads its header into a :class:`VolumeHeader` (the voxel grid, its RAS
affine) and checks it with :func:`plan` before any voxel is read: the slicing axis and the
view (:func:`~iqeclip.data.readers.orientation.view_of`), the slice size, the slices and the
voxels against the limits. :func:`volume_slices` then cuts the decoded voxels into
:class:`~iqeclip.data.readers.base.Slice`, each turned into the view, with the volume's
:class:`~iqeclip.data.readers.base.Geometry` (how to put a map back, and the format maps are
written in).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from iqeclip.data.readers.base import Geometry, Slice
from iqeclip.data.readers.errors import cannot_read
from iqeclip.data.readers.intensity import Intensity, normalise
from iqeclip.data.readers.limits import Limits
from iqeclip.data.readers.orientation import ORIENTATIONS, View, slice_position_mm, view_of
from iqeclip.errors import UserError, param

__all__ = ["VolumePlan", "check_axis", "plan", "volume_shape", "volume_slices"]


def check_axis(axis: Any, orientation: str) -> None:
    """Refuse an ``--orientation`` or ``--axis`` no volume can be sliced by."""
    if orientation not in ORIENTATIONS:
        raise UserError(
            f"{param('orientation')} must be one of {', '.join(ORIENTATIONS)}, got {orientation!r}"
        )
    if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)) or not -3 <= axis <= 2:
        raise UserError(f"{param('axis')} must be 0, 1 or 2, got {axis!r}")


def volume_shape(what: str, path: Path, file_shape: tuple[int, ...]) -> tuple[int, ...]:
    """A file's shape without trailing singleton axes beyond the third, checked to be 2-D or 3-D
    (``cannot read <what> <path>: ...`` otherwise)."""
    shape = tuple(int(n) for n in file_shape)
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    if len(shape) > 3:
        raise cannot_read(
            what,
            path,
            f"{len(shape)}-D image of shape {tuple(file_shape)}; only 2-D and 3-D images (or 4-D "
            "with a single volume) are supported: extract one volume first",
        )
    if len(shape) < 2:
        raise cannot_read(what, path, f"{len(shape)}-D image of shape {tuple(file_shape)}")
    return shape


@dataclass(frozen=True)
class VolumePlan:
    """How a volume file is sliced, decided from its header.

    Attributes:
        source_shape: The file's shape (:func:`volume_shape`): a map volume is written in it.
        grid: The 3-D voxel grid the slices are taken from (``(x, y, 1)`` for a 2-D image).
        affine: The grid's RAS affine (4 x 4).
        view: The slicing axis and how each slice is turned.
    """

    source_shape: tuple[int, ...]
    grid: tuple[int, ...]
    affine: np.ndarray
    view: View

    @property
    def flat(self) -> bool:
        """A 2-D image: one slice, with no index."""
        return len(self.source_shape) == 2


def plan(
    what: str,
    path: Path,
    source_shape: tuple[int, ...],
    affine: np.ndarray,
    axis: int,
    orientation: str,
    limits: Limits,
) -> VolumePlan:
    """The :class:`VolumePlan` of a volume whose header says ``source_shape`` and ``affine``,
    its slices' size, their count and their voxels checked against ``limits`` (an
    :class:`~iqeclip.data.readers.limits.OverLimit` naming ``path``)."""
    flat = len(source_shape) == 2
    grid = (*source_shape, 1) if flat else tuple(source_shape)
    if flat and orientation == "canonical":  # the older rule never turned 2-D images
        view = View()
    else:
        plane = None if flat else int(axis) % 3
        native = 2 if flat else int(axis) % 3
        view = view_of(affine[:3, :3], orientation, plane, what, path, native)
    where = f"cannot read {what} {path}"
    width, height = (n for i, n in enumerate(grid) if i != view.axis)
    limits.check_slice(where, width, height, "each slice", path)
    limits.check_input(where, grid[view.axis], math.prod(grid), path=path)
    return VolumePlan(tuple(source_shape), grid, np.asarray(affine, np.float64), view)


def volume_slices(
    voxels: np.ndarray,
    volume: VolumePlan,
    path: Path,
    orientation: str,
    intensity: Intensity,
    header: Any = None,
    suffix: str = ".nii.gz",
) -> list[Slice]:
    """The slices of a decoded volume (``voxels`` in the file's voxel order, of
    ``volume.source_shape``): one (H, W) float32 :class:`Slice` per voxel index along the
    slicing axis, in the file's order, turned into the view, ``index`` the voxel index (None for
    a 2-D image) and ``slice_mm`` where it lies; all share one :class:`Geometry`, whose
    ``header`` and ``suffix`` say how a volume of maps is written (the source's format)."""
    data = np.asarray(voxels, dtype=np.float32).reshape(volume.grid)
    view = volume.view
    geometry = Geometry(
        volume.grid, volume.affine, view, orientation, volume.source_shape, header, suffix
    )
    out = []
    for i in range(volume.grid[view.axis]):
        image, levels = normalise(view.take(data, i), intensity)
        where = slice_position_mm(volume.affine, volume.grid, view, i)
        out.append(Slice(image, path, None if volume.flat else i, levels, where, geometry))
    return out
