"""NIfTI images (``.nii`` / ``.nii.gz``) as 2-D slices along one axis.

A 3-D volume is first reoriented, by default, to the closest canonical orientation (RAS+: voxel
axis 0 runs towards the patient's Right, 1 Anterior, 2 Superior; axes are only permuted and
flipped, never resampled, exactly as ``nibabel.as_closest_canonical``), so that the same scan
stored RAS, LPS or with its axes permuted gives the same slices. ``--axis`` is then an axis of
the canonical array: 0 gives sagittal, 1 coronal and 2 (the default) axial slices.
``orientation="native"`` keeps the file's voxel order instead. 2-D images are never reoriented.

Slices keep the (reoriented) array order: for ``axis=2``, ``image[i, j] = array[i, j, k]`` (rows
are the first array axis, columns the second; no rotation to a radiological view), so
``np.stack(maps, axis=axis)`` is an array of ``meta["shape"]``, and :func:`to_source_order`
turns it back into the file's voxel order, to be written with ``meta["affine"]`` and
``meta["header"]`` (the source file's). The default intensity rule is min-max per slice (see
:mod:`iqeclip.data.readers.intensity`).

nibabel (the optional extra) is imported only when a NIfTI file is read; all orientation work
is done by :mod:`nibabel.orientations`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from iqeclip.data.readers.base import Slice, need
from iqeclip.data.readers.intensity import DEFAULT_INTENSITY, Intensity, normalise
from iqeclip.errors import UserError, first_line

__all__ = ["ORIENTATIONS", "read_nifti", "to_source_order"]

ORIENTATIONS: tuple[str, ...] = ("canonical", "native")
"""Values of ``orientation`` (``--orientation``): RAS+ before slicing, or the file's order."""


def _identity(ndim: int) -> np.ndarray:
    """The orientation transform that changes nothing (nibabel's ``(n, 2)`` layout)."""
    return np.stack([np.arange(ndim, dtype=float), np.ones(ndim)], axis=1)


def _orient(
    path: Path, affine: np.ndarray, shape: tuple[int, ...], orientation: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    """``(ornt, to_source, array_affine, applied)`` for a 3-D volume of ``shape``.

    ``ornt`` takes the file's voxel order to the sliced array's, ``to_source`` back again, and
    ``array_affine`` is the sliced array's affine.
    """
    from nibabel.orientations import axcodes2ornt, inv_ornt_aff, io_orientation, ornt_transform

    if orientation == "native":
        return _identity(3), _identity(3), affine, "native"
    source = None
    if np.isfinite(affine).all():
        try:  # file voxel axes -> RAS+, as in nibabel.as_closest_canonical
            with np.errstate(divide="ignore", invalid="ignore"):
                source = io_orientation(affine)
        except (np.linalg.LinAlgError, ValueError):
            source = None
    if source is None or np.isnan(source).any():
        raise UserError(
            f"cannot read NIfTI {path}: its affine does not give every voxel axis a direction "
            "(degenerate or not finite); pass --orientation native to slice it in the file's "
            "voxel order"
        )
    canonical = axcodes2ornt(("R", "A", "S"))
    ornt = ornt_transform(source, canonical)
    to_source = ornt_transform(canonical, source)
    array_affine = affine @ inv_ornt_aff(ornt, shape)
    return ornt, to_source, array_affine, "canonical"


def to_source_order(array: np.ndarray, meta: dict[str, Any]) -> np.ndarray:
    """An array stacked in the slices' order (``meta["shape"]``) in the file's voxel order.

    Args:
        array: Shape ``meta["shape"]`` (e.g. ``np.stack(maps, axis=meta["axis"])``); further
            trailing axes are carried along.
        meta: A NIfTI slice's ``meta``.

    Returns:
        The array in the source file's voxel order (shape ``meta["source_shape"]``), to be
        written with ``meta["affine"]`` and ``meta["header"]``; the input itself when the
        slices were not reoriented.
    """
    to_source = meta.get("to_source")
    if to_source is None or np.array_equal(to_source, _identity(len(to_source))):
        return array
    from nibabel.orientations import apply_orientation

    return np.ascontiguousarray(apply_orientation(array, to_source))


def read_nifti(
    path: Path,
    axis: int = 2,
    intensity: Intensity = DEFAULT_INTENSITY,
    orientation: str = "canonical",
) -> list[Slice]:
    """Read a NIfTI image (``.nii`` / ``.nii.gz``) as 2-D slices along one axis.

    Values are ``get_fdata(dtype=float32)`` (scl_slope/scl_inter applied). A 3-D volume is
    reoriented to RAS+ first (``orientation="canonical"``, the default) or kept in the file's
    voxel order (``"native"``). Slices keep the array order, ``image = np.take(array, index,
    axis=axis)``, so ``np.stack(images, axis=axis)`` has the shape ``meta["shape"]`` and
    :func:`to_source_order` of it has the file's voxel order, for writing back with
    ``meta["affine"]`` and ``meta["header"]``. Trailing singleton dimensions beyond the third
    (e.g. a 4-D file with one volume) are dropped.

    Args:
        path: The NIfTI file.
        axis: Axis of the (reoriented) array to slice along (0, 1 or 2; negative values count
            from the end); with ``"canonical"`` 0 is left-right, 1 posterior-anterior and 2
            inferior-superior (axial slices). Ignored for 2-D images.
        intensity: Window / percentile options (default: min-max per slice).
        orientation: ``"canonical"`` (closest RAS+ orientation) or ``"native"``.

    Returns:
        One (H, W) float32 :class:`Slice` per index along ``axis`` (``index`` set); a 2-D image
        gives one slice with ``index`` None and ``meta["axis"]`` None. ``meta`` holds the source
        file's ``affine``, ``header``, ``file_shape`` and 3-D ``source_shape``; ``shape`` (the
        sliced array's), ``array_affine`` (its affine), ``orientation`` (the one applied:
        ``"native"`` for 2-D images), and the nibabel orientation transforms ``ornt`` (file
        voxel order to the sliced array) and ``to_source`` (back, used by
        :func:`to_source_order`).

    Raises:
        UserError: nibabel missing, ``cannot read NIfTI <path>: <reason>`` for a missing or
            garbage file, a 4-D image with several volumes or an affine without an orientation
            (with ``"canonical"``), a bad axis (naming ``--axis``) or orientation (naming
            ``--orientation``).
    """
    path = Path(path)
    if orientation not in ORIENTATIONS:
        raise UserError(f"--orientation must be canonical or native, got {orientation!r}")
    nib = need("nibabel", path)
    if not path.is_file():
        raise UserError(f"cannot read NIfTI {path}: no such file")
    try:
        img = nib.load(str(path))
        data = np.asarray(img.get_fdata(dtype=np.float32))
    except Exception as exc:  # any parser failure is a problem with the user's file
        raise UserError(f"cannot read NIfTI {path}: {first_line(exc)}") from None
    file_shape = tuple(int(n) for n in img.shape)
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim > 3:
        raise UserError(
            f"cannot read NIfTI {path}: {data.ndim}-D image of shape {file_shape}; only 2-D and "
            "3-D images (or 4-D with a single volume) are supported: extract one volume first"
        )
    if data.ndim < 2:
        raise UserError(f"cannot read NIfTI {path}: {data.ndim}-D image of shape {file_shape}")
    affine = np.asarray(img.affine, dtype=np.float64)
    source_shape = tuple(int(n) for n in data.shape)
    if data.ndim == 2:
        ornt = to_source = _identity(2)
        array_affine, applied = affine, "native"
    else:
        if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)) or not -3 <= axis <= 2:
            raise UserError(f"--axis must be 0, 1 or 2, got {axis!r}")
        ornt, to_source, array_affine, applied = _orient(path, affine, source_shape, orientation)
        if applied == "canonical":
            from nibabel.orientations import apply_orientation

            data = np.ascontiguousarray(apply_orientation(data, ornt))
    common = {
        "affine": affine,
        "header": img.header,
        "shape": tuple(int(n) for n in data.shape),
        "source_shape": source_shape,
        "file_shape": file_shape,
        "orientation": applied,
        "ornt": ornt,
        "to_source": to_source,
        "array_affine": array_affine,
    }
    if data.ndim == 2:
        image, info = normalise(data, intensity)
        return [Slice(image=image, source=path, index=None, meta={**common, "axis": None, **info})]
    axis = int(axis) % 3
    out = []
    for i in range(data.shape[axis]):
        image, info = normalise(np.take(data, i, axis=axis), intensity)
        out.append(Slice(image=image, source=path, index=i, meta={**common, "axis": axis, **info}))
    return out
