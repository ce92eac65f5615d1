"""Tests for the NIfTI reader on written volumes and nibabel's sample files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from iqeclip.data.readers.intensity import Intensity
from iqeclip.data.readers.nifti import read_nifti
from iqeclip.data.readers.registry import read
from iqeclip.errors import UserError
from tests.unit.data.readers.conftest import minmax, save_nifti

RNG = np.random.default_rng(0)


def test_nifti_3d_slices_along_each_axis(tmp_path: Path, nib: Any) -> None:
    volume = RNG.random((5, 6, 7)).astype(np.float32)
    affine = np.array([[0, 0, 2.0, -10], [0, 1.5, 0, 3], [1.2, 0, 0, 7], [0, 0, 0, 1]])
    path = save_nifti(nib, tmp_path / "vol.nii.gz", volume, affine)
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

    flat = save_nifti(nib, tmp_path / "flat.nii.gz", RNG.random((8, 9)).astype(np.float32))
    (s,) = read(flat)
    assert s.index is None and s.image.shape == (8, 9) and s.meta["axis"] is None
    with pytest.raises(UserError, match="--axis"):
        read_nifti(save_nifti(nib, tmp_path / "v.nii", np.zeros((2, 2, 2), np.float32)), axis=3)


def test_nifti_nonfinite_and_constant_slices(tmp_path: Path, nib: Any) -> None:
    volume = RNG.random((6, 7, 4)).astype(np.float32) + 1.0
    volume[0, 0, 0] = np.nan
    volume[1, 2, 0] = np.inf
    volume[2, 3, 0] = -np.inf
    volume[:, :, 1] = np.nan  # no finite value at all
    volume[:, :, 2] = 3.0  # constant
    path = save_nifti(nib, tmp_path / "bad.nii.gz", volume)
    slices = read_nifti(path)
    assert all(np.isfinite(s.image).all() for s in slices)
    s0, s1, s2, s3 = slices
    assert s0.meta["nonfinite"] == 3 and not s0.meta["constant"]
    first = volume[:, :, 0].astype(np.float64)
    good = np.isfinite(first)
    expected = minmax(np.where(good, first, first[good].min()))  # bad -> the finite minimum
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
        read(broken)
    with pytest.raises(UserError, match=r"cannot read NIfTI .*no such file"):
        read_nifti(tmp_path / "missing.nii")
