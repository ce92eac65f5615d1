"""Tests for the medical readers (DICOM, NIfTI, 16-bit PNG/TIFF) on real sample files.

The DICOM and NIfTI samples ship inside the pydicom and nibabel wheels; modified copies are
written to ``tmp_path``. Tests that need an optional package skip when it is missing; the
missing-package messages are tested with ``sys.modules`` patched.
"""

from __future__ import annotations

import shutil
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from iqeclip.data.io import load_image
from iqeclip.data.medical import (
    MEDICAL_SUFFIXES,
    Intensity,
    Slice,
    is_medical,
    parse_percentile,
    parse_window,
    read_any,
    read_dicom,
    read_dicom_series,
    read_nifti,
    read_wide_image,
    slice_to_uint8_rgb,
)
from iqeclip.errors import UserError

RNG = np.random.default_rng(0)


# --------------------------------------------------------------------------------------------
# Fixtures and helpers.


@pytest.fixture
def pydicom() -> Any:
    return pytest.importorskip("pydicom")


@pytest.fixture
def nib() -> Any:
    return pytest.importorskip("nibabel")


def _sample(pydicom: Any, name: str) -> Path:
    return Path(pydicom.data.get_testdata_file(name))


def _minmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    return (x - x.min()) / (x.max() - x.min())


def _ct_hu(pydicom: Any) -> tuple[Any, np.ndarray, np.ndarray]:
    """CT_small: (dataset, stored values, HU computed by hand)."""
    ds = pydicom.dcmread(_sample(pydicom, "CT_small.dcm"))
    raw = ds.pixel_array.astype(np.float64)
    hu = raw * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    return ds, raw, hu


def _write_ct(pydicom: Any, path: Path, **changes: Any) -> Path:
    """A copy of CT_small with some attributes changed (``pixels=`` replaces the stored values)."""
    ds = pydicom.dcmread(_sample(pydicom, "CT_small.dcm"))
    pixels = changes.pop("pixels", None)
    if pixels is not None:
        ds.PixelData = np.asarray(pixels, dtype=ds.pixel_array.dtype).tobytes()
    for key, value in changes.items():
        setattr(ds, key, value)
    ds.save_as(path)
    return path


def _save_nifti(nib: Any, path: Path, data: np.ndarray, affine: np.ndarray | None = None) -> Path:
    affine = np.diag([0.8, 0.9, 2.5, 1.0]) if affine is None else affine
    nib.save(nib.Nifti1Image(data, affine), str(path))
    return path


# --------------------------------------------------------------------------------------------
# Parsing, options, detection, optional dependencies.


def test_parse_window() -> None:
    assert parse_window("40,400") == (40.0, 400.0)
    assert parse_window(" -600 , 1500 ") == (-600.0, 1500.0)
    for bad in ["40", "40,400,1", "a,400", "40,0", "40,-10", "nan,400", "40,inf", ""]:
        with pytest.raises(UserError, match="--window"):
            parse_window(bad)


def test_parse_percentile_and_intensity_checks() -> None:
    assert parse_percentile("1,99") == (1.0, 99.0)
    for bad in ["99,1", "-1,50", "1,101", "5", "x,y"]:
        with pytest.raises(UserError, match="--percentile"):
            parse_percentile(bad)
    assert Intensity(window=(40, 400)).window == (40.0, 400.0)
    with pytest.raises(UserError, match="--window"):
        Intensity(window=(40, 0))
    with pytest.raises(UserError, match="--percentile"):
        Intensity(percentile=(50, 50))
    with pytest.raises(UserError, match="together"):
        Intensity(window=(40, 400), percentile=(1, 99))


def test_is_medical(tmp_path: Path, pydicom: Any) -> None:
    assert {".dcm", ".dicom", ".nii", ".nii.gz", ".png", ".tif", ".tiff"} <= set(MEDICAL_SUFFIXES)
    assert is_medical(Path("scan.DCM")) and is_medical(Path("brain.nii.gz"))
    assert is_medical(Path("brain.nii"))
    assert not is_medical(Path("photo.png")) and not is_medical(tmp_path / "missing")
    no_suffix = tmp_path / "IM0001"
    shutil.copy(_sample(pydicom, "CT_small.dcm"), no_suffix)
    assert is_medical(no_suffix)  # the DICM magic at byte 128
    (tmp_path / "text").write_text("x" * 200)
    assert not is_medical(tmp_path / "text")
    empty = tmp_path / "empty"
    empty.mkdir()
    assert not is_medical(empty)
    assert is_medical(tmp_path)  # a folder holding a DICOM file is a series


@pytest.mark.parametrize(
    ("module", "call"),
    [
        ("pydicom", lambda p: read_dicom(p / "a.dcm")),
        ("pydicom", lambda p: read_dicom_series(p)),
        ("nibabel", lambda p: read_nifti(p / "a.nii.gz")),
        ("nibabel", lambda p: read_any(p / "a.nii")),
    ],
)
def test_missing_optional_module(tmp_path: Path, monkeypatch: Any, module: str, call: Any) -> None:
    for name in ("a.dcm", "a.nii.gz", "a.nii"):
        (tmp_path / name).write_bytes(b"\0" * 300)
    monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(UserError, match=rf"needs {module}: pip install 'iqeclip\[medical\]'"):
        call(tmp_path)


# --------------------------------------------------------------------------------------------
# DICOM.


def test_ct_rescale_to_hu(pydicom: Any) -> None:
    ds, raw, hu = _ct_hu(pydicom)
    assert float(ds.RescaleIntercept) == -1024.0  # the sample really has an intercept
    (s,) = read_dicom(_sample(pydicom, "CT_small.dcm"))
    assert s.index is None and s.image.shape == raw.shape and s.image.dtype == np.float32
    assert s.meta["modality"] == "CT" and s.meta["rescale"] == (1.0, -1024.0)
    assert s.meta["intensity"] == "minmax" and s.meta["window"] is None  # no window in the file
    np.testing.assert_allclose(s.image, _minmax(hu), atol=1e-6)
    # A window spanning exactly [min HU, max HU] maps the rescaled min to 0 and max to 1.
    lo, hi = hu.min(), hu.max()
    (w,) = read_dicom(_sample(pydicom, "CT_small.dcm"), Intensity(window=((lo + hi) / 2, hi - lo)))
    np.testing.assert_allclose(w.image, _minmax(hu), atol=1e-6)
    assert w.image[hu == lo].max() == 0.0 and w.image[hu == hi].min() == 1.0


def test_ct_explicit_window(tmp_path: Path, pydicom: Any) -> None:
    _, raw, _ = _ct_hu(pydicom)
    pixels = raw.astype(np.int16)
    pixels[0, :4] = [1064, 0, 864, 1464]  # HU 40, -1024, -160, 440
    path = _write_ct(pydicom, tmp_path / "ct.dcm", pixels=pixels)
    hu = pixels * 1.0 - 1024.0
    (s,) = read_dicom(path, Intensity(window=(40, 400)))
    assert s.meta["intensity"] == "window" and s.meta["window"] == (40.0, 400.0)
    assert s.image[0, 0] == pytest.approx(0.5)
    assert s.image[0, 1] == 0.0 and s.image[0, 2] == 0.0 and s.image[0, 3] == 1.0
    assert np.all(s.image[hu <= -160] == 0.0) and np.all(s.image[hu >= 240] == 1.0)
    np.testing.assert_allclose(s.image, np.clip((hu + 160) / 400, 0, 1), atol=1e-6)


def test_mr_uses_file_window_unless_overridden(pydicom: Any) -> None:
    path = _sample(pydicom, "MR_small.dcm")
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
    path = _sample(pydicom, "rtdose.dcm")
    frames = pydicom.dcmread(path).pixel_array
    assert frames.ndim == 3 and frames.shape[0] > 1
    slices = read_dicom(path)
    assert [s.index for s in slices] == list(range(frames.shape[0]))
    for s, frame in zip(slices, frames, strict=True):
        assert s.image.shape == frame.shape and s.meta["frames"] == frames.shape[0]
        np.testing.assert_allclose(s.image, _minmax(frame), atol=1e-6)


def test_enhanced_per_frame_rescale_and_window(tmp_path: Path, pydicom: Any) -> None:
    ds = pydicom.dcmread(_sample(pydicom, "rtdose.dcm"))
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
    _, _, hu = _ct_hu(pydicom)
    path = _write_ct(pydicom, tmp_path / "mono1.dcm", PhotometricInterpretation="MONOCHROME1")
    (s,) = read_dicom(path)
    assert s.meta["photometric"] == "MONOCHROME1"
    np.testing.assert_allclose(s.image, 1.0 - _minmax(hu), atol=1e-6)
    (w,) = read_dicom(path, Intensity(window=(40, 400)))
    np.testing.assert_allclose(w.image, 1.0 - np.clip((hu + 160) / 400, 0, 1), atol=1e-6)


def test_voi_lut_sequence(tmp_path: Path, pydicom: Any) -> None:
    _, _, hu = _ct_hu(pydicom)
    item = pydicom.Dataset()
    item.add_new("LUTDescriptor", "US", [4096, 0, 16])
    item.add_new("LUTData", "US", list(range(0, 4096 * 16, 16)))
    path = _write_ct(pydicom, tmp_path / "lut.dcm", VOILUTSequence=pydicom.Sequence([item]))
    (s,) = read_dicom(path)
    assert s.meta["intensity"] == "voi-lut"
    np.testing.assert_allclose(s.image, np.clip(hu, 0, 4095) / 4095, atol=1e-6)


def test_rgb_and_palette_dicom(pydicom: Any) -> None:
    path = _sample(pydicom, "SC_rgb_small_odd.dcm")
    rgb = pydicom.dcmread(path).pixel_array
    (s,) = read_dicom(path)
    assert s.image.shape == (3, 3, 3) and s.image.dtype == np.float32
    np.testing.assert_allclose(s.image, _minmax(rgb), atol=1e-6)  # joint over the channels
    (p,) = read_dicom(_sample(pydicom, "examples_palette.dcm"))
    assert p.image.shape[2] == 3 and p.image.min() == 0.0 and p.image.max() == 1.0


def test_series_order_by_instance_then_position(tmp_path: Path, pydicom: Any) -> None:
    series = tmp_path / "series"
    series.mkdir()
    for name, instance in [("a.dcm", 3), ("b.dcm", 1), ("c.dcm", 2)]:
        _write_ct(pydicom, series / name, InstanceNumber=instance)
    (series / "notes.txt").write_text("not a DICOM file")
    slices = read_dicom_series(series)
    assert [s.source.name for s in slices] == ["b.dcm", "c.dcm", "a.dcm"]
    assert [s.index for s in slices] == [0, 1, 2]
    assert all(s.meta["series"] == series and s.meta["frame"] is None for s in slices)
    assert [s.meta["instance"] for s in slices] == [1.0, 2.0, 3.0]
    assert read_any(series)[0].source.name == "b.dcm"

    by_z = tmp_path / "by_z"
    by_z.mkdir()
    for name, z in [("x.dcm", 5.0), ("y.dcm", -5.0), ("z.dcm", 0.0)]:
        _write_ct(pydicom, by_z / name, InstanceNumber=7, ImagePositionPatient=[0.0, 0.0, z])
    assert [s.source.name for s in read_dicom_series(by_z)] == ["y.dcm", "z.dcm", "x.dcm"]


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
        read_dicom(_sample(pydicom, "MR_truncated.dcm"))
    with pytest.raises(UserError, match="no pixel data"):
        read_dicom(_sample(pydicom, "rtplan.dcm"))
    empty = tmp_path / "empty_series"
    empty.mkdir()
    with pytest.raises(UserError, match="no DICOM files"):
        read_dicom_series(empty)
    with pytest.raises(UserError, match="no such folder"):
        read_dicom_series(tmp_path / "missing_series")


# --------------------------------------------------------------------------------------------
# NIfTI.


def test_nifti_3d_slices_along_each_axis(tmp_path: Path, nib: Any) -> None:
    volume = RNG.random((5, 6, 7)).astype(np.float32)
    affine = np.array([[0, 0, 2.0, -10], [0, 1.5, 0, 3], [1.2, 0, 0, 7], [0, 0, 0, 1]])
    path = _save_nifti(nib, tmp_path / "vol.nii.gz", volume, affine)
    for axis, shape in [(0, (6, 7)), (1, (5, 7)), (2, (5, 6)), (-1, (5, 6))]:
        slices = read_nifti(path, axis=axis)
        assert len(slices) == volume.shape[axis % 3]
        assert [s.index for s in slices] == list(range(len(slices)))
        s = slices[0]
        assert s.image.shape == shape and s.image.dtype == np.float32
        assert s.meta["axis"] == axis % 3 and s.meta["shape"] == (5, 6, 7)
        np.testing.assert_allclose(s.meta["affine"], affine, atol=1e-6)  # stored as float32
        assert isinstance(s.meta["header"], nib.Nifti1Header)
        # Round trip: stacking along the axis gives the volume's layout (per-slice min-max
        # computed here with reductions, independently of np.take).
        others = tuple(a for a in range(3) if a != axis % 3)
        lo = volume.min(axis=others, keepdims=True)
        hi = volume.max(axis=others, keepdims=True)
        stacked = np.stack([t.image for t in slices], axis=axis % 3)
        np.testing.assert_allclose(stacked, (volume - lo) / (hi - lo), atol=1e-6)


def test_nifti_shipped_samples(nib: Any) -> None:
    data_path = Path(pytest.importorskip("nibabel.testing").data_path)
    slices = read_nifti(data_path / "standard.nii.gz", axis=2)
    shape = nib.load(str(data_path / "standard.nii.gz")).shape
    assert len(slices) == shape[2] and slices[0].image.shape == shape[:2]
    assert len(read_nifti(data_path / "standard.nii.gz", axis=0)) == shape[0]
    with pytest.raises(UserError, match=r"cannot read NIfTI .*example4d.*4-D"):
        read_nifti(data_path / "example4d.nii.gz")


def test_nifti_scaling_window_4d_single_volume_and_2d(tmp_path: Path, nib: Any) -> None:
    stored = RNG.integers(0, 500, size=(4, 5, 3, 1), dtype=np.int16)
    img = nib.Nifti1Image(stored, np.eye(4))
    img.header.set_slope_inter(2.0, -100.0)
    path = tmp_path / "scaled.nii"
    nib.save(img, str(path))
    slices = read_nifti(path, intensity=Intensity(window=(300, 400)))
    assert len(slices) == 3 and slices[0].meta["file_shape"] == (4, 5, 3, 1)
    assert slices[0].meta["shape"] == (4, 5, 3)
    values = stored[..., 0] * 2.0 - 100.0  # scl_slope / scl_inter applied
    stacked = np.stack([s.image for s in slices], axis=2)
    np.testing.assert_allclose(stacked, np.clip((values - 100) / 400, 0, 1), atol=1e-6)

    flat = _save_nifti(nib, tmp_path / "flat.nii.gz", RNG.random((8, 9)).astype(np.float32))
    (s,) = read_any(flat)
    assert s.index is None and s.image.shape == (8, 9) and s.meta["axis"] is None
    with pytest.raises(UserError, match="--axis"):
        read_nifti(_save_nifti(nib, tmp_path / "v.nii", np.zeros((2, 2, 2), np.float32)), axis=3)


def test_nifti_nonfinite_and_constant_slices(tmp_path: Path, nib: Any) -> None:
    volume = RNG.random((6, 7, 4)).astype(np.float32) + 1.0
    volume[0, 0, 0] = np.nan
    volume[1, 2, 0] = np.inf
    volume[2, 3, 0] = -np.inf
    volume[:, :, 1] = np.nan  # no finite value at all
    volume[:, :, 2] = 3.0  # constant
    path = _save_nifti(nib, tmp_path / "bad.nii.gz", volume)
    slices = read_nifti(path)
    assert all(np.isfinite(s.image).all() for s in slices)
    s0, s1, s2, s3 = slices
    assert s0.meta["nonfinite"] == 3 and not s0.meta["constant"]
    first = volume[:, :, 0].astype(np.float64)
    good = np.isfinite(first)
    expected = _minmax(np.where(good, first, first[good].min()))  # bad -> the finite minimum
    np.testing.assert_allclose(s0.image, expected, atol=1e-6)
    assert s0.image[0, 0] == s0.image[1, 2] == s0.image[2, 3] == 0.0
    assert s1.meta["nonfinite"] == 6 * 7 and s1.meta["constant"] and not s1.image.any()
    assert s2.meta["nonfinite"] == 0 and s2.meta["constant"] and not s2.image.any()
    assert s3.meta["nonfinite"] == 0 and not s3.meta["constant"]


def test_nifti_errors(tmp_path: Path, nib: Any) -> None:
    garbage = tmp_path / "garbage.nii"
    garbage.write_bytes(RNG.integers(0, 256, 1000, dtype=np.uint8).tobytes())
    with pytest.raises(UserError, match=r"cannot read NIfTI .*garbage\.nii"):
        read_nifti(garbage)
    broken = tmp_path / "broken.nii.gz"
    broken.write_bytes(b"\x1f\x8b not really gzip")
    with pytest.raises(UserError, match=r"cannot read NIfTI .*broken\.nii\.gz"):
        read_any(broken)
    with pytest.raises(UserError, match=r"cannot read NIfTI .*no such file"):
        read_nifti(tmp_path / "missing.nii")


# --------------------------------------------------------------------------------------------
# 16-bit images, dispatch and model input.


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_wide_image_minmax_and_percentile(tmp_path: Path, suffix: str) -> None:
    values = RNG.integers(1000, 3000, size=(20, 30), dtype=np.uint16)
    values[0, 0], values[0, 1] = 1000, 2999
    path = tmp_path / f"scan{suffix}"
    Image.fromarray(values).save(path)
    with Image.open(path) as im:
        assert im.mode.startswith("I;16")
    (s,) = read_wide_image(path)
    assert s.index is None and s.meta["intensity"] == "minmax"
    np.testing.assert_allclose(s.image, _minmax(values), atol=1e-6)
    # load_image's full-range rule keeps this 12-bit-ish scan dark; the per-image rule does not.
    assert load_image(path, 30).max() < 20 and slice_to_uint8_rgb(s, 30).max() == 255
    (p,) = read_any(path, intensity=Intensity(percentile=(5, 95)))
    lo, hi = np.percentile(values.astype(np.float64), [5, 95])
    np.testing.assert_allclose(p.image, (np.clip(values, lo, hi) - lo) / (hi - lo), atol=1e-6)
    (w,) = read_wide_image(path, Intensity(window=(2000, 1000)))
    np.testing.assert_allclose(w.image, np.clip((values - 1500.0) / 1000, 0, 1), atol=1e-6)


def test_multipage_tiff(tmp_path: Path) -> None:
    pages = [Image.fromarray((np.arange(12, dtype=np.uint16) * k).reshape(3, 4)) for k in (1, 3)]
    path = tmp_path / "stack.tiff"
    pages[0].save(path, save_all=True, append_images=pages[1:])
    slices = read_wide_image(path)
    assert [s.index for s in slices] == [0, 1]
    np.testing.assert_allclose(slices[1].image, np.arange(12).reshape(3, 4) / 11, atol=1e-6)


def test_eight_bit_images_match_load_image(tmp_path: Path) -> None:
    grey = tmp_path / "grey.png"
    Image.fromarray(RNG.integers(40, 200, size=(21, 17), dtype=np.uint8)).save(grey)
    colour = tmp_path / "colour.png"
    Image.fromarray(RNG.integers(0, 256, size=(13, 19, 3), dtype=np.uint8)).save(colour)
    for path, shape in [(grey, (21, 17)), (colour, (13, 19, 3))]:
        (s,) = read_any(path)
        assert s.image.shape == shape and s.meta["intensity"] == "8bit"
        out = slice_to_uint8_rgb(s, 24)
        assert out.dtype == torch.uint8 and out.shape == (3, 24, 24)
        assert torch.equal(out, load_image(path, 24))


def test_slice_to_uint8_rgb() -> None:
    image = np.linspace(0, 1, 64, dtype=np.float32).reshape(8, 8)
    out = slice_to_uint8_rgb(Slice(image=image, source=Path("x"), index=None, meta={}), 8)
    assert out.shape == (3, 8, 8) and out.dtype == torch.uint8
    assert torch.equal(out[0], out[1]) and torch.equal(out[1], out[2])
    assert int(out[0, 0, 0]) == 0 and int(out[0, 7, 7]) == 255
    zeros = Slice(image=np.zeros((5, 5), np.float32), source=Path("x"), index=0, meta={})
    assert not slice_to_uint8_rgb(zeros, 16).any()
    with pytest.raises(UserError):
        slice_to_uint8_rgb(zeros, 0)


def test_read_any_dispatch_and_errors(tmp_path: Path, pydicom: Any) -> None:
    no_suffix = tmp_path / "IM0001"
    shutil.copy(_sample(pydicom, "CT_small.dcm"), no_suffix)
    (s,) = read_any(no_suffix)
    assert s.meta["modality"] == "CT"
    with pytest.raises(UserError, match="no such file or folder"):
        read_any(tmp_path / "missing.dcm")
    (tmp_path / "notes.xyz").write_text("hello")
    with pytest.raises(UserError, match="unsupported file type"):
        read_any(tmp_path / "notes.xyz")
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(UserError, match=r"cannot read image .*empty\.png: empty file"):
        read_any(tmp_path / "empty.png")
