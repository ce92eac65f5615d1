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
  (:func:`~iqeclip.data.readers.pil.load_mask`), or the slice of a label volume (NIfTI, NRRD,
  MetaImage, a 3D Slicer ``.seg.nrrd`` or a DICOM-SEG; the label values of the reading count:
  :func:`~iqeclip.data.readers.labels.is_label_volume`) aligned to the image's volume by
  :func:`~iqeclip.data.readers.labels.label_slices`.

Volumes are read once and kept for the next slices (:mod:`~iqeclip.data.readers.cached`, a
small per-process cache keyed by path, modification time, size and reading), so a data loader
walking a volume slice by slice decodes it once.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from iqeclip.data.readers.base import Slice
from iqeclip.data.readers.cached import forget_slices, read_slices
from iqeclip.data.readers.image import ImageReader
from iqeclip.data.readers.intensity import DEFAULT_INTENSITY
from iqeclip.data.readers.labels import forget_labels, is_label_volume, label_slices
from iqeclip.data.readers.pil import check_size, load_image, load_mask, slice_to_uint8_rgb
from iqeclip.data.readers.reading import DEFAULT_READING, Reading
from iqeclip.data.readers.registry import reader_for
from iqeclip.errors import UserError

__all__ = [
    "forget_volumes",
    "is_label_volume",
    "label_slices",
    "mask_input",
    "model_input",
    "read_slices",
    "reference",
]


def forget_volumes() -> None:
    """Drop the decoded volumes and label volumes kept for the next slices (``iqeclip serve``
    reads each upload once: what it decoded is not kept after the answer)."""
    forget_slices()
    forget_labels()


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
