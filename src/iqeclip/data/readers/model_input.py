"""A sample's model input and mask: one function each, used by every command.

A sample is a path any registered reader takes (image, DICOM file, DICOM series folder, NIfTI
volume...: :func:`~iqeclip.data.readers.registry.reader_for`), an optional slice ``index`` (the
slice's position in the list that :func:`~iqeclip.data.readers.registry.read` returns for the
path) and a :class:`~iqeclip.data.readers.reading.Reading`: the intensity rule, the slicing axis
and the NIfTI orientation of the run.

- :func:`model_input` gives the ``(3, S, S)`` uint8 model input, the one path from a file to
  the model. A whole PIL image read with the default intensity rule (:func:`reference`, the one
  place the PIL fast path is decided) is :func:`~iqeclip.data.readers.pil.load_image` (the
  reference BMAD pre-processing; it equals the slice path bit for bit, see
  :mod:`~iqeclip.data.readers.pil`, and reads the first page of a multi-page file); everything
  else is the slice of :func:`~iqeclip.data.readers.registry.read` through
  :func:`~iqeclip.data.readers.pil.slice_to_uint8_rgb`, the path ``predict`` takes.
- :func:`mask_input` gives the ``(S, S)`` bool mask: an image mask
  (:func:`~iqeclip.data.readers.pil.load_mask`), or the slice of a label volume (NIfTI; any
  non-zero voxel is anomalous: :func:`is_label_volume`) aligned to the image's volume by
  :func:`label_slices`.

Volumes are read once and kept for the next slices (a small per-process cache keyed by path,
modification time, size and reading), so a data loader walking a volume slice by slice decodes it
once.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from iqeclip.data.readers.base import Geometry, Slice
from iqeclip.data.readers.errors import UnreadableFile, cannot_read, need
from iqeclip.data.readers.image import ImageReader
from iqeclip.data.readers.intensity import DEFAULT_INTENSITY
from iqeclip.data.readers.nifti import NiftiReader
from iqeclip.data.readers.pil import check_size, load_image, load_mask, slice_to_uint8_rgb
from iqeclip.data.readers.reading import DEFAULT_READING, Reading
from iqeclip.data.readers.registry import read, reader_for
from iqeclip.errors import UserError, first_line

__all__ = [
    "forget_volumes",
    "is_label_volume",
    "label_slices",
    "mask_input",
    "model_input",
    "read_slices",
    "reference",
]

CACHED_VOLUMES = 16
"""Volumes (and label volumes) kept decoded per process (a BraTS FLAIR is 36 MB as float32)."""
AFFINE_TOLERANCE_MM = 0.01
"""How far a label volume's affine may be from its image's (float32 storage, rounding)."""


def _stamp(path: Path) -> tuple[int, int]:
    try:
        st = path.stat()
    except OSError:
        return (0, 0)
    return (st.st_mtime_ns, st.st_size)


@functools.lru_cache(maxsize=CACHED_VOLUMES)
def _read(path: str, stamp: tuple[int, int], reading: Reading) -> tuple[Slice, ...]:
    del stamp  # part of the key: a rewritten file is read again
    return tuple(
        read(
            Path(path),
            axis=reading.axis,
            intensity=reading.intensity,
            orientation=reading.orientation,
            limits=reading.limits,
        )
    )


def read_slices(path: Path, reading: Reading = DEFAULT_READING) -> tuple[Slice, ...]:
    """The slices of ``path`` as :func:`~iqeclip.data.readers.registry.read` gives them (cached).

    The slices are shared with later calls: do not modify them.
    """
    path = Path(path)
    return _read(str(path), _stamp(path), reading)


def forget_volumes() -> None:
    """Drop the decoded volumes and label volumes kept for the next slices (``iqeclip serve``
    reads each upload once: what it decoded is not kept after the answer)."""
    _read.cache_clear()
    _labels.cache_clear()


def _pick(slices: tuple[Slice, ...], index: int | None, path: Path) -> Slice:
    if index is None:
        if len(slices) != 1:
            raise UserError(f"{path} holds {len(slices)} slices: give the slice to use")
        return slices[0]
    if not 0 <= index < len(slices):
        raise UserError(f"{path} has no slice {index} (it holds {len(slices)})")
    return slices[index]


def reference(path: Path, reading: Reading) -> bool:
    """Whether a whole file's model input is the reference BMAD pre-processing
    (:func:`~iqeclip.data.readers.pil.load_image`): a PIL image read with each kind's default
    intensity rule. The one place the PIL fast path is decided."""
    return reading.intensity == DEFAULT_INTENSITY and isinstance(reader_for(path), ImageReader)


def is_label_volume(path: Path) -> bool:
    """Whether a mask is a label volume (NIfTI), to be aligned to its image's volume, rather
    than an image mask."""
    return isinstance(reader_for(path), NiftiReader)


def model_input(
    path: Path, index: int | None, size: int, reading: Reading = DEFAULT_READING
) -> torch.Tensor:
    """The uint8 model input ``(3, size, size)`` of one sample (see the module docstring)."""
    path = Path(path)
    if index is None and reference(path, reading):
        return load_image(path, size, reading.limits)
    check_size(size)
    return slice_to_uint8_rgb(_pick(read_slices(path, reading), index, path), size)


def mask_input(
    mask: Path, image: Path, index: int | None, size: int, reading: Reading = DEFAULT_READING
) -> torch.Tensor:
    """The bool mask ``(size, size)`` of one sample: an image mask, or a label volume's slice."""
    mask = Path(mask)
    if index is None or not is_label_volume(mask):
        return load_mask(mask, size, reading.limits)
    check_size(size)
    labels = label_slices(mask, image, reading)[index]
    picture = Image.fromarray(labels.astype(np.uint8) * 255)
    return torch.from_numpy(np.asarray(picture.resize((size, size), Image.NEAREST)) > 0)


def volume_geometry(image: Path, slices: Sequence[Slice]) -> Geometry:
    """The :class:`~iqeclip.data.readers.base.Geometry` of the volume one input's slices come
    from.

    Raises:
        UserError: The input is no volume (a 2-D image, several DICOM volumes in one folder, a
            DICOM series without usable geometry).
    """
    volumes = {None if s.dicom is None else s.dicom.volume_id for s in slices}
    if len(volumes) > 1:
        raise UserError(
            f"{image} holds {len(volumes)} DICOM volumes: give each series its own folder to "
            "pair it with a label volume"
        )
    geometry, dicom = slices[0].geometry, slices[0].dicom
    if geometry is not None:
        return geometry
    if dicom is not None and dicom.series is not None:
        raise UserError(
            f"DICOM series {image} has no usable geometry (ImageOrientationPatient, "
            "PixelSpacing, ImagePositionPatient, one size, even spacing), so a label volume "
            "cannot be aligned to it"
        )
    reader = reader_for(image)
    raise UserError(
        f"a label volume needs a volume to label: {image} is a 2-D "
        f"{'input' if reader is None else reader.name}; give an image mask"
    )


@functools.lru_cache(maxsize=CACHED_VOLUMES)
def _labels(
    mask: str, image: str, stamps: tuple[Any, ...], reading: Reading
) -> tuple[np.ndarray, ...]:
    del stamps
    mask_path, image_path = Path(mask), Path(image)
    slices = read_slices(image_path, reading)
    geometry = volume_geometry(image_path, slices)
    data = aligned_labels(mask_path, geometry.grid, geometry.affine, image_path)
    return tuple(geometry.view.take(data, s.index or 0) for s in slices)


def label_slices(
    mask: Path, image: Path, reading: Reading = DEFAULT_READING
) -> tuple[np.ndarray, ...]:
    """A label volume's bool slices, parallel to ``read_slices(image, reading)`` (cached).

    The image is a NIfTI volume or a single DICOM series: the label volume is put in the voxel
    order of the image's grid (a NIfTI file's own; a series' ``(columns, rows, slices)`` grid of
    :func:`~iqeclip.data.readers.dicom_series.series_affine`, the grid ``predict`` writes and ITK
    reads), whatever order it is stored in, and each slice turned as the image's is.

    Raises:
        UserError: Naming the label volume, when it cannot be read, is not 3-D, or does not have
            the image's shape and affine once put in the image's voxel order.
    """
    mask, image = Path(mask), Path(image)
    stamps = (_stamp(mask), _stamp(image))
    return _labels(str(mask), str(image), stamps, reading)


def aligned_labels(
    mask: Path, shape: tuple[int, ...], affine: np.ndarray, image: Path
) -> np.ndarray:
    """A label volume as a bool array of ``shape`` in the voxel order of ``affine``.

    nibabel puts the label volume's axes in the image array's order (a permutation and flips
    chosen from both affines, never a resampling); the result must then have the image array's
    shape and its affine within :data:`AFFINE_TOLERANCE_MM`.
    """
    nib = need("nibabel", mask)
    from nibabel.orientations import apply_orientation, inv_ornt_aff, io_orientation, ornt_transform

    try:
        img = nib.load(str(mask))
        data = np.asanyarray(img.dataobj)
    except Exception as exc:  # any parser failure is a problem with the user's file
        raise cannot_read("label volume", mask, first_line(exc)) from None
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        reason = f"expected a 3-D volume, got shape {data.shape}"
        raise UnreadableFile(f"label volume {mask}: {reason}", mask, reason)
    source = np.asarray(img.affine, dtype=np.float64)
    try:
        ornt = ornt_transform(io_orientation(source), io_orientation(affine))
    except Exception as exc:
        reason = f"its affine has no orientation: {exc}"
        raise UnreadableFile(f"label volume {mask}: {reason}", mask, reason) from None
    data = apply_orientation(data, ornt)
    moved = source @ inv_ornt_aff(ornt, img.shape[:3])
    if tuple(data.shape) != tuple(shape):
        raise UserError(
            f"label volume {mask} is {'x'.join(map(str, data.shape))} voxels in the image's "
            f"voxel order but {image} is {'x'.join(map(str, shape))}"
        )
    gap = float(np.abs(moved - affine).max())
    if not gap <= AFFINE_TOLERANCE_MM:
        reason = (
            f"their affines differ by up to {gap:.3g} (resample the labels onto the image first)"
        )
        raise UnreadableFile(  # about the image: the label volume is named by its caller
            f"label volume {mask} is not in the space of {image}: {reason}", image, reason
        )
    return np.asarray(data) != 0
