"""How a slice of a volume is turned to face the model: one rule for every volume format.

A volume (a NIfTI file, a DICOM series, a multi-frame DICOM) is a voxel grid with a world
geometry. Its slices are taken along one voxel axis, in the file's own order (slice ``k`` is the
file's voxel index ``k``), and each slice is then turned, by a transpose and flips only (never a
resampling), into the view its :data:`ORIENTATIONS` rule names:

- ``radiological`` (the default): the view a DICOM viewer shows. Axial slices have the patient's
  anterior at the top and the patient's right on the image's left; coronal slices superior at
  the top, right on the left; sagittal slices superior at the top, anterior on the left. This is
  how DICOM series are stored and how PNGs exported from a viewer look, so a DICOM series, its
  NIfTI conversion and its PNG slices all reach the model as the same picture.
- ``canonical``: the rule of checkpoints trained before the radiological view (iqeclip 0.1):
  the slice as it lies in the volume reoriented to RAS+ (rows towards the first RAS axis of the
  plane, columns the second; an axial slice lies on its side). DICOM slices keep their stored
  pixel order.
- ``native``: the file's voxel order, untouched (an escape hatch for a volume whose affine has
  no orientation).

Which plane is sliced is ``--axis`` for NIfTI volumes (0 sagittal, 1 coronal, 2 axial: the
file's voxel axis closest to that world axis, as ``nibabel.orientations.io_orientation`` finds
it), and the acquisition plane for DICOM. A :class:`View` records the slicing axis and the
transform, and undoes it (:meth:`View.to_file`) so maps are written back voxel for voxel.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from iqeclip.data.readers.errors import cannot_read
from iqeclip.errors import UserError, param

__all__ = ["ORIENTATIONS", "View", "slice_position_mm", "view_of"]

ORIENTATIONS: tuple[str, ...] = ("radiological", "canonical", "native")
"""Values of ``--orientation`` (see the module docstring); the first is the default."""

# plane (the world axis sliced across: 0 R-L, 1 A-P, 2 S-I) -> the world axis and direction
# (+1: towards R, A or S) that the image's rows and columns run along, per rule
_RULES: dict[str, dict[int, tuple[tuple[int, int], tuple[int, int]]]] = {
    "radiological": {2: ((1, -1), (0, -1)), 1: ((2, -1), (0, -1)), 0: ((2, -1), (1, -1))},
    "canonical": {2: ((0, 1), (1, 1)), 1: ((0, 1), (2, 1)), 0: ((1, 1), (2, 1))},
}


@dataclass(frozen=True)
class View:
    """A volume's slicing axis and how each of its slices is turned into the model's view.

    Attributes:
        axis: The file's voxel axis the slices are taken along.
        transpose: Swap the slice's two in-plane axes (the first remaining voxel axis becomes
            the columns).
        flip_rows: Then reverse the rows.
        flip_cols: Then reverse the columns.
    """

    axis: int = 2
    transpose: bool = False
    flip_rows: bool = False
    flip_cols: bool = False

    def to_view(self, plane: np.ndarray) -> np.ndarray:
        """A file slice ``(n_a, n_b[, C])`` (the two remaining voxel axes in order) as viewed."""
        out = np.swapaxes(plane, 0, 1) if self.transpose else plane
        if self.flip_rows:
            out = out[::-1]
        if self.flip_cols:
            out = out[:, ::-1]
        return np.ascontiguousarray(out)

    def to_file(self, image: np.ndarray) -> np.ndarray:
        """The inverse of :meth:`to_view`: a viewed picture back in the file slice's order."""
        out = image[::-1] if self.flip_rows else image
        if self.flip_cols:
            out = out[:, ::-1]
        return np.ascontiguousarray(np.swapaxes(out, 0, 1) if self.transpose else out)

    def take(self, volume: np.ndarray, index: int) -> np.ndarray:
        """Slice ``index`` of ``volume`` (in the file's voxel order) as viewed."""
        return self.to_view(np.take(volume, index, axis=self.axis))

    def put(self, volume: np.ndarray, index: int, image: np.ndarray) -> None:
        """Write a viewed picture back into slice ``index`` of ``volume`` (file voxel order)."""
        plane: list[slice | int] = [slice(None)] * volume.ndim
        plane[self.axis] = index
        volume[tuple(plane)] = self.to_file(image)


def _axes(directions: np.ndarray) -> np.ndarray:
    """For each voxel axis, ``(world axis, +1/-1)`` of the closest RAS axis (nibabel's rule)."""
    from nibabel.orientations import io_orientation

    affine = np.eye(4)
    affine[:3, :3] = directions
    with np.errstate(divide="ignore", invalid="ignore"):
        ornt = io_orientation(affine)
    if np.isnan(ornt).any():
        raise ValueError("degenerate")
    return ornt.astype(int)


def view_of(
    directions: np.ndarray | None,
    rule: str,
    plane: int | None,
    what: str,
    path: Path,
    native_axis: int = 2,
) -> View:
    """The :class:`View` of a volume.

    Args:
        directions: ``(3, 3)`` RAS direction of each voxel axis (the affine's columns; a DICOM
            grid's are the column, row and slice directions), or None where the source has no
            geometry (then the slices are taken as stored).
        rule: One of :data:`ORIENTATIONS`.
        plane: The world axis to slice across (0 sagittal, 1 coronal, 2 axial); None: the plane
            of voxel axis 2 (a DICOM acquisition's slice normal).
        what: The source's format (``NIfTI``, ``DICOM``) and ``path`` its file, named in errors.
        native_axis: The slicing axis for ``native`` and for a source without geometry.

    Raises:
        UserError: ``rule`` unknown, or a geometry that gives a voxel axis no direction.
    """
    if rule not in ORIENTATIONS:
        raise UserError(
            f"{param('orientation')} must be one of {', '.join(ORIENTATIONS)}, got {rule!r}"
        )
    if rule == "native" or directions is None:
        return View(axis=native_axis)
    directions = np.asarray(directions, dtype=np.float64)
    try:
        if not np.isfinite(directions).all():
            raise ValueError("not finite")
        ornt = _axes(directions)
    except (ValueError, np.linalg.LinAlgError):
        raise cannot_read(
            what,
            path,
            "its geometry does not give every voxel axis a direction (degenerate or not "
            "finite); pass --orientation native to slice it in the file's voxel order",
        ) from None
    world = [int(w) for w in ornt[:, 0]]
    plane = world[2] if plane is None else int(plane)
    axis = world.index(plane)
    first, second = (a for a in range(3) if a != axis)
    (row_world, row_sign), (_, col_sign) = _RULES[rule][plane]
    transpose = world[first] != row_world
    rows, cols = (second, first) if transpose else (first, second)
    return View(
        axis=axis,
        transpose=transpose,
        flip_rows=int(ornt[rows, 1]) != row_sign,
        flip_cols=int(ornt[cols, 1]) != col_sign,
    )


def slice_position_mm(
    affine: np.ndarray | None, shape: tuple[int, ...], view: View, index: int
) -> float | None:
    """Where slice ``index`` lies: the RAS world coordinate (mm) of its centre along the world
    axis closest to the slicing axis (an axial slice's S coordinate, as DICOM's z); None without
    geometry."""
    if affine is None:
        return None
    affine = np.asarray(affine, dtype=np.float64)
    centre = np.array([(n - 1) / 2.0 for n in shape[:3]] + [1.0])
    centre[view.axis] = index
    world = affine @ centre
    direction = affine[:3, view.axis]
    if not np.isfinite(world).all() or not np.isfinite(direction).all():
        return None
    return float(world[int(np.argmax(np.abs(direction)))])
