"""Reading input files: one reader class per format, registered in one list.

Modules:

- :mod:`~iqeclip.data.readers.reader`: what a reader is (the :class:`Reader` protocol, and
  :class:`FileReader` with the answers most formats give);
- :mod:`~iqeclip.data.readers.registry`: the registered readers (:func:`register`,
  :func:`unregister`), a path's reader (:func:`reader_for`: by suffix, then by sniffing) and
  :func:`read`, which reads any supported input as a list of :class:`Slice`;
- :mod:`~iqeclip.data.readers.image`: PIL images (:class:`ImageReader`) and the checks an image
  passes before a run; :mod:`~iqeclip.data.readers.pil`: PNG / JPEG / BMP / TIFF (incl. 16-bit)
  as the model's reference uint8 input (:func:`load_image`, :func:`load_mask`), as slices
  (:func:`read_wide_image`), and slices back to model input (:func:`slice_to_uint8_rgb`);
- :mod:`~iqeclip.data.readers.dicom_readers`: DICOM files (:class:`DicomReader`) and series
  folders (:class:`SeriesReader`); :mod:`~iqeclip.data.readers.dicom` converts one file (one
  slice per frame), :mod:`~iqeclip.data.readers.dicom_series` groups and orders a folder's;
  :mod:`~iqeclip.data.readers.deflated`: the start of a deflated DICOM file, read before
  pydicom inflates the whole of it;
- :mod:`~iqeclip.data.readers.nifti`: NIfTI volumes (:class:`NiftiReader`);
  :mod:`~iqeclip.data.readers.itk`: NRRD and MetaImage volumes, read with SimpleITK
  (:class:`ItkReader`); both slice by the one rule of :mod:`~iqeclip.data.readers.volume`;
- :mod:`~iqeclip.data.readers.labels`: label volumes (NIfTI, NRRD / MetaImage / Slicer
  ``.seg.nrrd``, DICOM-SEG) put on their image's grid, exactly or resampled by nearest
  neighbour, and the ``--label_values`` that count; :mod:`~iqeclip.data.readers.cached`: the
  decoded volumes kept for the next slices;
- :mod:`~iqeclip.data.readers.model_input`: a sample's model input and mask (:func:`model_input`,
  :func:`mask_input`) under a run's :class:`Reading` (:mod:`~iqeclip.data.readers.reading`),
  the one path every command takes;
- :mod:`~iqeclip.data.readers.intensity`: the rules that map raw values to [0, 1]
  (:class:`Intensity`, ``--window`` / ``--percentile`` parsing, :func:`normalise` and the
  :class:`Levels` it applied);
- :mod:`~iqeclip.data.readers.limits`: the largest input read (:class:`Limits`: pixels per
  slice, slices and pixels per input), which every reader checks from the header before it
  decodes; :func:`declared` gives what an input's headers declare;
- :mod:`~iqeclip.data.readers.base`: the typed :class:`Slice` (its :class:`Geometry` and
  :class:`DicomInfo`); :mod:`~iqeclip.data.readers.errors`: the errors callers catch by type
  (:class:`UnreadableFile`, :class:`MissingPackage`) and the lazy import of the optional packages.

pydicom, nibabel, SimpleITK and highdicom are an optional extra (``pip install
'iqeclip[medical]'``), imported only when a file that needs them is read.
"""

from iqeclip.data.readers.base import DicomInfo, Geometry, Slice
from iqeclip.data.readers.dicom import read_dicom
from iqeclip.data.readers.dicom_readers import (
    DICOM_SUFFIXES,
    DicomReader,
    SeriesReader,
    read_dicom_series,
)
from iqeclip.data.readers.errors import (
    INSTALL_HINT,
    MissingPackage,
    UnreadableFile,
    cannot_read,
    reason_about,
)
from iqeclip.data.readers.image import IMAGE_SUFFIXES, ImageReader
from iqeclip.data.readers.intensity import (
    Intensity,
    Levels,
    normalise,
    parse_percentile,
    parse_window,
)
from iqeclip.data.readers.itk import METAIMAGE, NRRD, ItkReader
from iqeclip.data.readers.limits import DEFAULT_LIMITS, Declared, Limits, OverLimit
from iqeclip.data.readers.model_input import (
    is_label_volume,
    label_slices,
    mask_input,
    model_input,
    read_slices,
    reference,
)
from iqeclip.data.readers.nifti import NIFTI_SUFFIXES, NiftiReader, read_nifti
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
from iqeclip.data.readers.reader import FileReader, Reader
from iqeclip.data.readers.reading import (
    DEFAULT_READING,
    Reading,
    describe_intensity,
    reading_from,
    reading_options,
)
from iqeclip.data.readers.registry import (
    declared,
    input_stem,
    read,
    reader_for,
    register,
    single_image,
    unregister,
)

for _reader in (SeriesReader(), NiftiReader(), NRRD, METAIMAGE, DicomReader(), ImageReader()):
    register(_reader)  # the built-in formats, asked in this order

__all__ = [
    "DEFAULT_LIMITS",
    "DEFAULT_READING",
    "DICOM_SUFFIXES",
    "IMAGE_SUFFIXES",
    "INSTALL_HINT",
    "NIFTI_SUFFIXES",
    "WIDE_MODES",
    "Declared",
    "DicomInfo",
    "DicomReader",
    "FileReader",
    "Geometry",
    "ImageReader",
    "Intensity",
    "ItkReader",
    "Levels",
    "Limits",
    "MissingPackage",
    "NiftiReader",
    "OverLimit",
    "Reader",
    "Reading",
    "SeriesReader",
    "Slice",
    "UnreadableFile",
    "as_input",
    "cannot_read",
    "check_size",
    "declared",
    "describe_intensity",
    "input_stem",
    "is_label_volume",
    "label_slices",
    "load_image",
    "load_mask",
    "mask_input",
    "model_input",
    "normalise",
    "parse_percentile",
    "parse_window",
    "read",
    "read_dicom",
    "read_dicom_series",
    "read_nifti",
    "read_slices",
    "read_wide_image",
    "reader_for",
    "reading_from",
    "reading_options",
    "reason_about",
    "reference",
    "register",
    "single_image",
    "slice_to_uint8_rgb",
    "to_float",
    "unregister",
]
