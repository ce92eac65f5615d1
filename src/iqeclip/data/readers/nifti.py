"""NIfTI images (``.nii`` / ``.nii.gz``) as 2-D slices along one voxel axis.

Slices keep the array order: for ``axis=2``, ``image[i, j] = volume[i, j, k]`` (rows are the
first voxel axis, columns the second; no re-orientation to a radiological view), so
``np.stack(maps, axis=axis)`` is a volume of the file's shape that can be written back with
``meta["affine"]``. The default intensity rule is min-max per slice (see
:mod:`iqeclip.data.readers.intensity`).

nibabel (the optional extra) is imported only when a NIfTI file is read.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from iqeclip.data.readers.base import Slice, need
from iqeclip.data.readers.intensity import DEFAULT_INTENSITY, Intensity, normalise
from iqeclip.errors import UserError, first_line

__all__ = ["read_nifti"]


def read_nifti(path: Path, axis: int = 2, intensity: Intensity = DEFAULT_INTENSITY) -> list[Slice]:
    """Read a NIfTI image (``.nii`` / ``.nii.gz``) as 2-D slices along one voxel axis.

    Values are ``get_fdata(dtype=float32)`` (scl_slope/scl_inter applied). Slices keep the array
    order, ``image = np.take(volume, index, axis=axis)``, so ``np.stack(images, axis=axis)`` has
    the volume's layout (``meta["shape"]``) for writing back with ``meta["affine"]``. Trailing
    singleton dimensions beyond the third (e.g. a 4-D file with one volume) are dropped.

    Args:
        path: The NIfTI file.
        axis: Voxel axis to slice along (0, 1 or 2; negative values count from the end).
            Ignored for 2-D images.
        intensity: Window / percentile options (default: min-max per slice).

    Returns:
        One (H, W) float32 :class:`Slice` per index along ``axis`` (``index`` set); a 2-D image
        gives one slice with ``index`` None and ``meta["axis"]`` None.

    Raises:
        UserError: nibabel missing, ``cannot read NIfTI <path>: <reason>`` for a missing or
            garbage file or a 4-D image with several volumes, or a bad axis (naming ``--axis``).
    """
    path = Path(path)
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
    common = {
        "affine": np.asarray(img.affine, dtype=np.float64),
        "header": img.header,
        "shape": tuple(int(n) for n in data.shape),
        "file_shape": file_shape,
    }
    if data.ndim == 2:
        image, info = normalise(data, intensity)
        return [Slice(image=image, source=path, index=None, meta={**common, "axis": None, **info})]
    if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)) or not -3 <= axis <= 2:
        raise UserError(f"--axis must be 0, 1 or 2, got {axis!r}")
    axis = int(axis) % 3
    out = []
    for i in range(data.shape[axis]):
        image, info = normalise(np.take(data, i, axis=axis), intensity)
        out.append(Slice(image=image, source=path, index=i, meta={**common, "axis": axis, **info}))
    return out
