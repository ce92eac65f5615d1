"""Tests for the DICOM reader on real sample files (pydicom's test data)."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from iqeclip.data.readers.dicom import read_dicom
from iqeclip.data.readers.intensity import Intensity
from iqeclip.errors import UserError
from tests.unit.data.readers.conftest import ct_hu, dicom_sample, minmax, write_ct

RNG = np.random.default_rng(0)


def test_ct_rescale_to_hu(pydicom: Any) -> None:
    ds, raw, hu = ct_hu(pydicom)
    assert float(ds.RescaleIntercept) == -1024.0  # the sample really has an intercept
    (s,) = read_dicom(dicom_sample(pydicom, "CT_small.dcm"))
    assert s.index is None and s.image.shape == raw.shape and s.image.dtype == np.float32
    assert s.meta["modality"] == "CT" and s.meta["rescale"] == (1.0, -1024.0)
    assert s.meta["intensity"] == "minmax" and s.meta["window"] is None  # no window in the file
    np.testing.assert_allclose(s.image, minmax(hu), atol=1e-6)
    # A window spanning exactly [min HU, max HU] maps the rescaled min to 0 and max to 1.
    lo, hi = hu.min(), hu.max()
    (w,) = read_dicom(
        dicom_sample(pydicom, "CT_small.dcm"), Intensity(window=((lo + hi) / 2, hi - lo))
    )
    np.testing.assert_allclose(w.image, minmax(hu), atol=1e-6)
    assert w.image[hu == lo].max() == 0.0 and w.image[hu == hi].min() == 1.0


def test_ct_explicit_window(tmp_path: Path, pydicom: Any) -> None:
    _, raw, _ = ct_hu(pydicom)
    pixels = raw.astype(np.int16)
    pixels[0, :4] = [1064, 0, 864, 1464]  # HU 40, -1024, -160, 440
    path = write_ct(pydicom, tmp_path / "ct.dcm", pixels=pixels)
    hu = pixels * 1.0 - 1024.0
    (s,) = read_dicom(path, Intensity(window=(40, 400)))
    assert s.meta["intensity"] == "window" and s.meta["window"] == (40.0, 400.0)
    assert s.image[0, 0] == pytest.approx(0.5)
    assert s.image[0, 1] == 0.0 and s.image[0, 2] == 0.0 and s.image[0, 3] == 1.0
    assert np.all(s.image[hu <= -160] == 0.0) and np.all(s.image[hu >= 240] == 1.0)
    np.testing.assert_allclose(s.image, np.clip((hu + 160) / 400, 0, 1), atol=1e-6)


def test_mr_uses_file_window_unless_overridden(pydicom: Any) -> None:
    path = dicom_sample(pydicom, "MR_small.dcm")
    raw = pydicom.dcmread(path).pixel_array.astype(np.float64)
    (s,) = read_dicom(path)
    assert s.meta["modality"] == "MR"
    assert s.meta["intensity"] == "file-window" and s.meta["window"] == (600.0, 1600.0)
    np.testing.assert_allclose(s.image, np.clip((raw + 200) / 1600, 0, 1), atol=1e-6)
    (w,) = read_dicom(path, Intensity(window=(100, 50)))
    np.testing.assert_allclose(w.image, np.clip((raw - 75) / 50, 0, 1), atol=1e-6)
    (p,) = read_dicom(path, Intensity(percentile=(1, 99)))
    lo, hi = np.percentile(raw, [1, 99])
    assert p.meta["intensity"] == "percentile"
    np.testing.assert_allclose(p.image, (np.clip(raw, lo, hi) - lo) / (hi - lo), atol=1e-6)


def test_multiframe_one_slice_per_frame(pydicom: Any) -> None:
    path = dicom_sample(pydicom, "rtdose.dcm")
    frames = pydicom.dcmread(path).pixel_array
    assert frames.ndim == 3 and frames.shape[0] > 1
    slices = read_dicom(path)
    assert [s.index for s in slices] == list(range(frames.shape[0]))
    for s, frame in zip(slices, frames, strict=True):
        assert s.image.shape == frame.shape and s.meta["frames"] == frames.shape[0]
        np.testing.assert_allclose(s.image, minmax(frame), atol=1e-6)


def test_enhanced_per_frame_rescale_and_window(tmp_path: Path, pydicom: Any) -> None:
    ds = pydicom.dcmread(dicom_sample(pydicom, "rtdose.dcm"))
    frames = ds.pixel_array.astype(np.float64)
    Dataset, Sequence = pydicom.Dataset, pydicom.Sequence
    rescale = Dataset()
    rescale.RescaleSlope, rescale.RescaleIntercept = 2, -5
    shared = Dataset()
    shared.PixelValueTransformationSequence = Sequence([rescale])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    voi = Dataset()
    voi.WindowCenter, voi.WindowWidth = [round(frames[1].mean() * 2 - 5), 99], 1e5
    per_frame = [Dataset() for _ in frames]
    per_frame[1].FrameVOILUTSequence = Sequence([voi])
    ds.PerFrameFunctionalGroupsSequence = Sequence(per_frame)
    path = tmp_path / "enhanced.dcm"
    ds.save_as(path)
    slices = read_dicom(path)
    assert slices[0].meta["rescale"] == (2.0, -5.0) and slices[0].meta["intensity"] == "minmax"
    centre = voi.WindowCenter[0]
    assert slices[1].meta["intensity"] == "file-window"
    assert slices[1].meta["window"] == (centre, 1e5)  # first value of a multi-valued window
    expected = np.clip((frames[1] * 2 - 5 - (centre - 5e4)) / 1e5, 0, 1)
    np.testing.assert_allclose(slices[1].image, expected, atol=1e-6)


def test_monochrome1_is_inverted(tmp_path: Path, pydicom: Any) -> None:
    _, _, hu = ct_hu(pydicom)
    path = write_ct(pydicom, tmp_path / "mono1.dcm", PhotometricInterpretation="MONOCHROME1")
    (s,) = read_dicom(path)
    assert s.meta["photometric"] == "MONOCHROME1"
    np.testing.assert_allclose(s.image, 1.0 - minmax(hu), atol=1e-6)
    (w,) = read_dicom(path, Intensity(window=(40, 400)))
    np.testing.assert_allclose(w.image, 1.0 - np.clip((hu + 160) / 400, 0, 1), atol=1e-6)


def test_voi_lut_sequence(tmp_path: Path, pydicom: Any) -> None:
    _, _, hu = ct_hu(pydicom)
    item = pydicom.Dataset()
    item.add_new("LUTDescriptor", "US", [4096, 0, 16])
    item.add_new("LUTData", "US", list(range(0, 4096 * 16, 16)))
    path = write_ct(pydicom, tmp_path / "lut.dcm", VOILUTSequence=pydicom.Sequence([item]))
    (s,) = read_dicom(path)
    assert s.meta["intensity"] == "voi-lut"
    np.testing.assert_allclose(s.image, np.clip(hu, 0, 4095) / 4095, atol=1e-6)


def test_rgb_and_palette_dicom(pydicom: Any) -> None:
    path = dicom_sample(pydicom, "SC_rgb_small_odd.dcm")
    rgb = pydicom.dcmread(path).pixel_array
    (s,) = read_dicom(path)
    assert s.image.shape == (3, 3, 3) and s.image.dtype == np.float32
    np.testing.assert_allclose(s.image, minmax(rgb), atol=1e-6)  # joint over the channels
    (p,) = read_dicom(dicom_sample(pydicom, "examples_palette.dcm"))
    assert p.image.shape[2] == 3 and p.image.min() == 0.0 and p.image.max() == 1.0


def test_dicom_errors(tmp_path: Path, pydicom: Any) -> None:
    garbage = tmp_path / "garbage.dcm"
    garbage.write_bytes(RNG.integers(0, 256, 2000, dtype=np.uint8).tobytes())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(UserError, match=r"cannot read DICOM .*garbage\.dcm"):
            read_dicom(garbage)
    with pytest.raises(UserError, match=r"cannot read DICOM .*no such file"):
        read_dicom(tmp_path / "missing.dcm")
    with pytest.raises(UserError, match=r"cannot read DICOM .*MR_truncated"):
        read_dicom(dicom_sample(pydicom, "MR_truncated.dcm"))
    with pytest.raises(UserError, match="no pixel data"):
        read_dicom(dicom_sample(pydicom, "rtplan.dcm"))
