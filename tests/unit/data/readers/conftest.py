"""Fixtures and sample files for the reader tests.

The DICOM and NIfTI samples ship inside the pydicom and nibabel wheels; modified copies are
written to ``tmp_path``. Tests that need an optional package skip when it is missing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest


@pytest.fixture
def pydicom() -> Any:
    return pytest.importorskip("pydicom")


@pytest.fixture
def nib() -> Any:
    return pytest.importorskip("nibabel")


def dicom_sample(pydicom: Any, name: str) -> Path:
    return Path(pydicom.data.get_testdata_file(name))


def minmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    return (x - x.min()) / (x.max() - x.min())


def ct_hu(pydicom: Any) -> tuple[Any, np.ndarray, np.ndarray]:
    """CT_small: (dataset, stored values, HU computed by hand)."""
    ds = pydicom.dcmread(dicom_sample(pydicom, "CT_small.dcm"))
    raw = ds.pixel_array.astype(np.float64)
    hu = raw * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    return ds, raw, hu


def write_ct(pydicom: Any, path: Path, **changes: Any) -> Path:
    """A copy of CT_small with some attributes changed (``pixels=`` replaces the stored values)."""
    ds = pydicom.dcmread(dicom_sample(pydicom, "CT_small.dcm"))
    pixels = changes.pop("pixels", None)
    if pixels is not None:
        ds.PixelData = np.asarray(pixels, dtype=ds.pixel_array.dtype).tobytes()
    for key, value in changes.items():
        setattr(ds, key, value)
    ds.save_as(path)
    return path


def save_nifti(nib: Any, path: Path, data: np.ndarray, affine: np.ndarray | None = None) -> Path:
    affine = np.diag([0.8, 0.9, 2.5, 1.0]) if affine is None else affine
    nib.save(nib.Nifti1Image(data, affine), str(path))
    return path


SC_MULTIFRAME_WORD = "1.2.840.10008.5.1.4.1.1.7.3"
"""Multi-frame Grayscale Word Secondary Capture Image Storage: an image storage SOP class."""


def image_copy(pydicom: Any, path: Path, folder: Path) -> Path:
    """A copy of a pydicom sample relabelled as an image storage SOP class (modality OT), pixel
    data and transfer syntax untouched: the RT dose samples are the wheel's only 32-bit
    multi-frame files, and an RT dose file itself is refused as no image."""
    ds = pydicom.dcmread(path)
    ds.SOPClassUID = SC_MULTIFRAME_WORD
    ds.file_meta.MediaStorageSOPClassUID = SC_MULTIFRAME_WORD
    ds.Modality = "OT"
    out = folder / f"image_{Path(path).name}"
    ds.save_as(out)
    return out
