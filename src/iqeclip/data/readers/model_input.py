"""A sample's model input and mask: one function each, used by every command.

A sample is a path of any :func:`~iqeclip.data.readers.registry.kind` (image, DICOM file, DICOM
series folder, NIfTI volume), an optional slice ``index`` (the slice's position in the list that
:func:`~iqeclip.data.readers.registry.read` returns for the path) and a :class:`Reading`: the
intensity rule, the slicing axis and the NIfTI orientation of the run.

- :func:`model_input` gives the ``(3, S, S)`` uint8 model input. A PIL image without an index
  read with the default intensity rule is :func:`~iqeclip.data.readers.pil.load_image` (the
  reference BMAD pre-processing; it equals the slice path bit for bit, see
  :mod:`~iqeclip.data.readers.pil`, and reads the first page of a multi-page file); everything
  else is the slice of :func:`~iqeclip.data.readers.registry.read` through
  :func:`~iqeclip.data.readers.pil.slice_to_uint8_rgb`, the path ``predict`` takes.
- :func:`mask_input` gives the ``(S, S)`` bool mask: an image mask
  (:func:`~iqeclip.data.readers.pil.load_mask`), or the slice of a label volume (NIfTI; any
  non-zero voxel is anomalous) aligned to the image's volume by :func:`label_slices`.

Volumes are read once and kept for the next slices (a small per-process cache keyed by path,
modification time, size and reading), so a data loader walking a volume slice by slice decodes it
once.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from iqeclip.data.readers.base import Slice, need
from iqeclip.data.readers.intensity import (
    DEFAULT_INTENSITY,
    Intensity,
    parse_percentile,
    parse_window,
)
from iqeclip.data.readers.limits import DEFAULT_LIMITS, Limits
from iqeclip.data.readers.orientation import ORIENTATIONS, View
from iqeclip.data.readers.pil import check_size, load_image, load_mask, slice_to_uint8_rgb
from iqeclip.data.readers.registry import kind, read
from iqeclip.errors import UserError, first_line

__all__ = [
    "DEFAULT_READING",
    "Reading",
    "describe_intensity",
    "forget_volumes",
    "label_slices",
    "mask_input",
    "model_input",
    "read_slices",
    "reading_from",
    "reading_options",
]

CACHED_VOLUMES = 16
"""Volumes (and label volumes) kept decoded per process (a BraTS FLAIR is 36 MB as float32)."""
AFFINE_TOLERANCE_MM = 0.01
"""How far a label volume's affine may be from its image's (float32 storage, rounding)."""


@dataclass(frozen=True)
class Reading:
    """How a run reads its inputs (recorded with every checkpoint's run settings).

    Attributes:
        intensity: The intensity rule (``--window`` / ``--percentile``; default: each input
            kind's own rule, see :mod:`~iqeclip.data.readers.intensity`).
        axis: The plane NIfTI volumes are sliced across (``--axis``).
        orientation: How volume slices are turned to face the model (``--orientation``,
            :mod:`~iqeclip.data.readers.orientation`).
        limits: The largest input read (:mod:`~iqeclip.data.readers.limits`; ``predict``'s
            ``--max_megapixels``...). Not part of the ``repr`` (nor of a run's identity): they
            decide which inputs are read, never how.
    """

    intensity: Intensity = DEFAULT_INTENSITY
    axis: int = 2
    orientation: str = ORIENTATIONS[0]
    limits: Limits = field(default=DEFAULT_LIMITS, repr=False)

    def __post_init__(self) -> None:
        if isinstance(self.axis, bool) or self.axis not in (0, 1, 2):
            raise UserError(f"--axis must be 0, 1 or 2, got {self.axis!r}")
        if self.orientation not in ORIENTATIONS:
            raise UserError(
                f"--orientation must be one of {', '.join(ORIENTATIONS)}, got {self.orientation!r}"
            )


DEFAULT_READING = Reading()


def reading_from(
    window: str | None, percentile: str | None, axis: int = 2, orientation: str = ORIENTATIONS[0]
) -> Reading:
    """The :class:`Reading` of the options ``--window``, ``--percentile``, ``--axis``,
    ``--orientation`` (checked: a one-line error naming the flag)."""
    intensity = Intensity(
        window=parse_window(window) if window else None,
        percentile=parse_percentile(percentile) if percentile else None,
    )
    return Reading(intensity, axis, orientation)


def reading_options(reading: Reading) -> dict[str, Any]:
    """A reading as the options that give it (``window``, ``percentile``, ``axis``,
    ``orientation``), for a run's recorded configuration."""
    intensity = reading.intensity
    return {
        "window": None if intensity.window is None else "{:g},{:g}".format(*intensity.window),
        "percentile": (
            None if intensity.percentile is None else "{:g},{:g}".format(*intensity.percentile)
        ),
        "axis": reading.axis,
        "orientation": reading.orientation,
    }


def describe_intensity(intensity: Intensity) -> str:
    """The rule in words, as the options spell it."""
    if intensity.window is not None:
        return "--window {:g},{:g}".format(*intensity.window)
    if intensity.percentile is not None:
        return "--percentile {:g},{:g}".format(*intensity.percentile)
    return "each input kind's default rule"


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


def model_input(
    path: Path, index: int | None, size: int, reading: Reading = DEFAULT_READING
) -> torch.Tensor:
    """The uint8 model input ``(3, size, size)`` of one sample (see the module docstring)."""
    path = Path(path)
    if index is None and reading.intensity == DEFAULT_INTENSITY and kind(path) == "image":
        return load_image(path, size, reading.limits)
    check_size(size)
    return slice_to_uint8_rgb(_pick(read_slices(path, reading), index, path), size)


def mask_input(
    mask: Path, image: Path, index: int | None, size: int, reading: Reading = DEFAULT_READING
) -> torch.Tensor:
    """The bool mask ``(size, size)`` of one sample: an image mask, or a label volume's slice."""
    mask = Path(mask)
    if index is None or kind(mask) != "nifti":
        return load_mask(mask, size, reading.limits)
    check_size(size)
    labels = label_slices(mask, image, reading)[index]
    picture = Image.fromarray(labels.astype(np.uint8) * 255)
    return torch.from_numpy(np.asarray(picture.resize((size, size), Image.NEAREST)) > 0)


def volume_geometry(
    image: Path, slices: Sequence[Slice]
) -> tuple[tuple[int, ...], np.ndarray, View]:
    """``(grid, affine, view)`` of the volume one input's slices come from.

    Raises:
        UserError: The input is no volume (a 2-D image, several DICOM volumes in one folder, a
            DICOM series without usable geometry).
    """
    meta = slices[0].meta
    volumes = {s.meta.get("volume_id") for s in slices}
    if len(volumes) > 1:
        raise UserError(
            f"{image} holds {len(volumes)} DICOM volumes: give each series its own folder to "
            "pair it with a label volume"
        )
    if meta.get("grid") is None:
        if meta.get("series") is not None:
            raise UserError(
                f"DICOM series {image} has no usable geometry (ImageOrientationPatient, "
                "PixelSpacing, ImagePositionPatient, one size, even spacing), so a label volume "
                "cannot be aligned to it"
            )
        raise UserError(
            f"a label volume needs a volume to label: {image} is a 2-D {kind(image) or 'input'}; "
            "give an image mask"
        )
    return tuple(meta["grid"]), np.asarray(meta["affine"]), meta["view"]


@functools.lru_cache(maxsize=CACHED_VOLUMES)
def _labels(
    mask: str, image: str, stamps: tuple[Any, ...], reading: Reading
) -> tuple[np.ndarray, ...]:
    del stamps
    mask_path, image_path = Path(mask), Path(image)
    slices = read_slices(image_path, reading)
    grid, affine, view = volume_geometry(image_path, slices)
    data = aligned_labels(mask_path, grid, affine, image_path)
    return tuple(view.take(data, s.index or 0) for s in slices)


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
        raise UserError(f"cannot read label volume {mask}: {first_line(exc)}") from None
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise UserError(f"label volume {mask}: expected a 3-D volume, got shape {data.shape}")
    source = np.asarray(img.affine, dtype=np.float64)
    try:
        ornt = ornt_transform(io_orientation(source), io_orientation(affine))
    except Exception as exc:
        raise UserError(f"label volume {mask}: its affine has no orientation: {exc}") from None
    data = apply_orientation(data, ornt)
    moved = source @ inv_ornt_aff(ornt, img.shape[:3])
    if tuple(data.shape) != tuple(shape):
        raise UserError(
            f"label volume {mask} is {'x'.join(map(str, data.shape))} voxels in the image's "
            f"voxel order but {image} is {'x'.join(map(str, shape))}"
        )
    gap = float(np.abs(moved - affine).max())
    if not gap <= AFFINE_TOLERANCE_MM:
        raise UserError(
            f"label volume {mask} is not in the space of {image}: their affines differ by up to "
            f"{gap:.3g} (resample the labels onto the image first)"
        )
    return np.asarray(data) != 0
