"""One model input per sample whatever the command: the BMAD fast path equals the slice path,
a DICOM series gets the affine of its geometry, and label volumes align to series and volumes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from iqeclip.data.readers import (
    Intensity,
    Reading,
    label_slices,
    load_image,
    model_input,
    read_dicom_series,
    reading_from,
)
from iqeclip.data.readers.dicom_series import series_affine
from iqeclip.data.readers.orientation import View
from iqeclip.data.readers.pil import read_wide_image, slice_to_uint8_rgb
from iqeclip.errors import UserError
from tests.unit.data.readers.conftest import write_ct

UID = "1.2.826.0.1.3680043.8.498.303"
COS, SIN = np.cos(np.pi / 6), np.sin(np.pi / 6)
ROW_DIR = np.array([1.0, 0.0, 0.0])  # ImageOrientationPatient[:3]: along a row (columns grow)
COL_DIR = np.array([0.0, COS, SIN])  # [3:]: down a column (rows grow); a 30-degree tilt
SPACING = (0.7, 0.6)  # PixelSpacing: between rows, between columns
ORIGIN = np.array([-40.0, 12.5, 30.0])
STEP = 2.5 * np.cross(ROW_DIR, COL_DIR)


def write_series(pydicom: Any, folder: Path, n: int = 4) -> Path:
    """An oblique series, files named against their slice order."""
    folder.mkdir()
    for k in range(n):
        position = ORIGIN + k * STEP
        write_ct(
            pydicom,
            folder / f"{n - k:02d}.dcm",
            ImageOrientationPatient=[*map(float, ROW_DIR), *map(float, COL_DIR)],
            PixelSpacing=list(SPACING),
            ImagePositionPatient=[float(v) for v in position],
            SeriesInstanceUID=UID,
            SOPInstanceUID=f"{UID}.{k + 1}",
            InstanceNumber=n - k,
        )
    return folder


def world_ras(r: int, c: int, k: int) -> np.ndarray:
    """Where pixel (row r, column c) of slice k is, by the DICOM definition, in RAS+ mm."""
    lps = ORIGIN + k * STEP + c * SPACING[1] * ROW_DIR + r * SPACING[0] * COL_DIR
    return lps * np.array([-1.0, -1.0, 1.0])


def test_series_affine_from_constructed_geometry(tmp_path, pydicom):
    """The grid ITK reads: voxel (i, j, k) is column i, row j of slice k."""
    folder = write_series(pydicom, tmp_path / "series")
    slices = read_dicom_series(folder)
    affine = slices[0].geometry.affine
    assert slices[0].geometry.grid == (128, 128, 4)
    assert all(np.array_equal(s.geometry.affine, affine) for s in slices)
    for r, c, k in [(0, 0, 0), (5, 0, 0), (0, 7, 0), (0, 0, 3), (127, 64, 2)]:
        np.testing.assert_allclose(affine @ [c, r, k, 1], [*world_ras(r, c, k), 1], atol=1e-9)
    assert np.linalg.det(affine[:3, :3]) > 0  # right-handed, as ITK's direction
    # this series is axial-ish (normal mostly S), its rows run P and its columns L: the
    # radiological view is the pixel array as stored (the grid slice transposed)
    assert all(s.geometry.view == View(axis=2, transpose=True) for s in slices)
    datasets = [pydicom.dcmread(folder / f"{4 - k:02d}.dcm") for k in range(4)]
    del datasets[0].ImageOrientationPatient
    assert series_affine(datasets) is None  # no geometry claimed without the tags


def test_label_volume_aligned_to_a_series(tmp_path, pydicom, nib):
    folder = write_series(pydicom, tmp_path / "series", n=3)
    affine = read_dicom_series(folder)[0].geometry.affine
    labels = np.zeros((128, 128, 3), np.uint8)  # (columns, rows, slices)
    labels[10:20, 30:35, 1] = 1
    stored = nib.Nifti1Image(labels, affine).as_reoriented([[2, -1], [0, 1], [1, -1]])
    mask = tmp_path / "seg.nii.gz"
    nib.save(stored, str(mask))
    assert nib.load(str(mask)).shape == (128, 3, 128)  # stored in another voxel order
    got = label_slices(mask, folder)
    # each slice as the image is viewed: rows down the columns of the grid
    assert len(got) == 3 and all(np.array_equal(g, labels[:, :, k].T) for k, g in enumerate(got))
    moved = affine.copy()
    moved[:3, 3] += 1000.0  # a metre off: nowhere near the series
    nib.save(nib.Nifti1Image(labels, moved), str(mask))
    with pytest.raises(UserError, match=r"seg\.nii\.gz is not in the space of"):
        label_slices(mask, folder)


def test_fast_path_equals_the_slice_path(tmp_path):
    rng = np.random.default_rng(0)
    for name, array in (
        ("grey.png", rng.integers(0, 256, (20, 30), dtype=np.uint8)),
        ("wide.png", rng.integers(0, 65536, (20, 30), dtype=np.uint16)),
        ("rgb.png", rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)),
    ):
        path = tmp_path / name
        Image.fromarray(array).save(path)
        ours = model_input(path, None, 16)
        assert torch.equal(ours, load_image(path, 16))  # the BMAD pre-processing, bit for bit
        assert torch.equal(ours, slice_to_uint8_rgb(read_wide_image(path)[0], 16))
    windowed = model_input(tmp_path / "wide.png", None, 16, reading_from("30000,20000", None))
    by_hand = read_wide_image(tmp_path / "wide.png", Intensity(window=(30000, 20000)))[0]
    assert torch.equal(windowed, slice_to_uint8_rgb(by_hand, 16))
    assert not torch.equal(windowed, load_image(tmp_path / "wide.png", 16))


def test_reading_options_checked():
    with pytest.raises(UserError, match=r"^axis must be 0, 1 or 2"):
        Reading(axis=3)
    with pytest.raises(UserError, match=r"^orientation must be one of radiological, canonical"):
        reading_from(None, None, 2, "lps")
    with pytest.raises(UserError, match=r"^window and percentile cannot be used together"):
        reading_from("40,400", "1,99")
    with pytest.raises(UserError, match=r"^percentile expects"):
        reading_from(None, "99,1")


def test_uneven_or_gapped_series_claims_no_affine(tmp_path, pydicom):
    folder = write_series(pydicom, tmp_path / "series", n=4)
    (folder / "02.dcm").unlink()  # slice 2 of 4 is missing: steps 2.5, 5.0
    assert read_dicom_series(folder)[0].geometry is None


def test_display_of_a_16_bit_image_is_not_clipped(tmp_path):
    from iqeclip.data.readers.pil import display_rgb

    values = np.array([[0, 1000, 40000, 65535]], np.uint16).repeat(3, axis=0)
    path = tmp_path / "wide.png"
    Image.fromarray(values).save(path)
    assert display_rgb(path)[0, :, 0].tolist() == [0, 4, 156, 255]  # round(v / 257)
