"""Reading input files: one module per format, and one registry that decides a file's type.

Modules:

- :mod:`~iqeclip.data.readers.registry`: a path's type (:func:`kind`: DICOM series folder,
  NIfTI, DICOM, PIL image; by suffix, then the ``DICM`` magic) and :func:`read`, which reads any
  supported input as a list of :class:`Slice`;
- :mod:`~iqeclip.data.readers.pil`: PNG / JPEG / BMP / TIFF (incl. 16-bit) as the model's
  reference uint8 input (:func:`load_image`, :func:`load_mask`), as slices
  (:func:`read_wide_image`), and slices back to model input (:func:`slice_to_uint8_rgb`);
- :mod:`~iqeclip.data.readers.dicom`: DICOM files (one slice per frame) and series;
- :mod:`~iqeclip.data.readers.deflated`: the start of a deflated DICOM file, read before pydicom
  inflates the whole of it;
- :mod:`~iqeclip.data.readers.nifti`: NIfTI volumes sliced along one voxel axis;
- :mod:`~iqeclip.data.readers.model_input`: a sample's model input and mask (:func:`model_input`,
  :func:`mask_input`) under a run's :class:`Reading`, the one path every command takes;
- :mod:`~iqeclip.data.readers.intensity`: the rules that map raw values to [0, 1]
  (:class:`Intensity`, ``--window`` / ``--percentile`` parsing);
- :mod:`~iqeclip.data.readers.limits`: the largest input read (:class:`Limits`: pixels per
  slice, slices and pixels per input), which every reader checks from the header before it
  decodes; :func:`declared` gives what an input's headers declare;
- :mod:`~iqeclip.data.readers.base`: the :class:`Slice` result and the lazy
  import of the optional packages.

pydicom and nibabel are an optional extra (``pip install 'iqeclip[medical]'``), imported only
when a DICOM or NIfTI file is read.
"""

from iqeclip.data.readers.base import INSTALL_HINT, Slice
from iqeclip.data.readers.dicom import read_dicom
from iqeclip.data.readers.intensity import Intensity, parse_percentile, parse_window
from iqeclip.data.readers.limits import DEFAULT_LIMITS, Declared, Limits, OverLimit
from iqeclip.data.readers.model_input import (
    DEFAULT_READING,
    Reading,
    describe_intensity,
    label_slices,
    mask_input,
    model_input,
    read_slices,
    reading_from,
    reading_options,
)
from iqeclip.data.readers.nifti import read_nifti
from iqeclip.data.readers.pil import (
    WIDE_MODES,
    as_input,
    check_size,
    load_image,
    load_mask,
    read_wide_image,
    slice_to_uint8_rgb,
    to_float,
)
from iqeclip.data.readers.registry import (
    DICOM_SUFFIXES,
    IMAGE_SUFFIXES,
    NIFTI_SUFFIXES,
    Kind,
    declared,
    kind,
    read,
    read_dicom_series,
)

__all__ = [
    "DEFAULT_LIMITS",
    "DEFAULT_READING",
    "DICOM_SUFFIXES",
    "IMAGE_SUFFIXES",
    "INSTALL_HINT",
    "NIFTI_SUFFIXES",
    "WIDE_MODES",
    "Declared",
    "Intensity",
    "Kind",
    "Limits",
    "OverLimit",
    "Reading",
    "Slice",
    "as_input",
    "check_size",
    "declared",
    "describe_intensity",
    "kind",
    "label_slices",
    "load_image",
    "load_mask",
    "mask_input",
    "model_input",
    "parse_percentile",
    "parse_window",
    "read",
    "read_dicom",
    "read_dicom_series",
    "read_nifti",
    "read_slices",
    "read_wide_image",
    "reading_from",
    "reading_options",
    "slice_to_uint8_rgb",
    "to_float",
]
