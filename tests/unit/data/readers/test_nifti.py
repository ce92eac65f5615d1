"""Tests for the NIfTI reader on written volumes and nibabel's sample files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from iqeclip.data.readers.intensity import Intensity
from iqeclip.data.readers.nifti import read_nifti, to_source_order
from iqeclip.data.readers.registry import read
from iqeclip.errors import UserError
from tests.unit.data.readers.conftest import minmax, save_nifti

RNG = np.random.default_rng(0)


def test_nifti_3d_slices_along_each_axis(tmp_path: Path, nib: Any) -> None:
    volume = RNG.random((5, 6, 7)).astype(np.float32)
    affine = np.array([[0, 0, 2.0, -10], [0, 1.5, 0, 3], [1.2, 0, 0, 7], [0, 0, 0, 1]])
    path = save_nifti(nib, tmp_path / "vol.nii.gz", volume, affine)
    for axis, shape in [(0, (6, 7)), (1, (5, 7)), (2, (5, 6)), (-1, (5, 6))]:
        slices = read_nifti(path, axis=axis, orientation="native")  # the file's voxel order
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


# The same scan stored in several orientations. The RAS+ voxel grid is x (towards the Right),
# y (Anterior), z (Superior); the lesion is one bright voxel with a dimmer neighbour on one side,
# off-centre along every axis, so any flip or axis swap moves it.
RAS_SHAPE = (12, 10, 4)
LESION = (8, 2, 1)
RAS_AFFINE = np.array([[0.9, 0, 0, -10], [0, 1.1, 0, 5], [0, 0, 2.5, 30], [0, 0, 0, 1]])
LESION_WINDOW = Intensity(window=(500.0, 1000.0))  # [0, 1000] -> [0, 1], the same for every slice


def lesion_volume() -> np.ndarray:
    """The RAS+ volume: background in [0, 100), the lesion 1000 and its neighbour 600."""
    volume = np.random.default_rng(1).random(RAS_SHAPE).astype(np.float32) * 100
    volume[LESION] = 1000.0
    volume[LESION[0], LESION[1] + 1, LESION[2]] = 600.0
    return volume


def stored_orientations(nib: Any, folder: Path) -> dict[str, tuple[Path, tuple[int, ...]]]:
    """:func:`lesion_volume` written RAS, LPS and oblique with permuted axes (SRA, rotated 12
    degrees about S): name -> (file, the lesion's voxel in that file's order)."""
    volume = lesion_volume()
    nx, ny, _ = RAS_SHAPE
    x, y, z = LESION
    flip_xy = np.array([[-1, 0, 0, nx - 1], [0, -1, 0, ny - 1], [0, 0, 1, 0], [0, 0, 0, 1]])
    c, s = np.cos(np.radians(12)), np.sin(np.radians(12))
    rotate = np.array([[c, -s, 0, 0], [s, c, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
    stored = {
        "ras": (volume, RAS_AFFINE, (x, y, z)),
        "lps": (volume[::-1, ::-1, :], RAS_AFFINE @ flip_xy, (nx - 1 - x, ny - 1 - y, z)),
        # file voxel (k, i, j) is RAS voxel (i, j, k)
        "oblique": (
            np.transpose(volume, (2, 0, 1)),
            rotate @ RAS_AFFINE[:, [2, 0, 1, 3]],
            (z, x, y),
        ),
    }
    out = {}
    for name, (data, affine, lesion) in stored.items():
        path = save_nifti(nib, folder / f"{name}.nii.gz", np.ascontiguousarray(data), affine)
        out[name] = (path, lesion)
    return out


def _stack(slices: list[Any]) -> np.ndarray:
    return np.stack([s.image for s in slices], axis=slices[0].meta["axis"])


def test_nifti_canonical_slices_are_the_same_for_every_stored_orientation(
    tmp_path: Path, nib: Any
) -> None:
    files = stored_orientations(nib, tmp_path)
    assert [nib.aff2axcodes(nib.load(str(p)).affine) for p, _ in files.values()] == [
        ("R", "A", "S"),
        ("L", "P", "S"),
        ("S", "R", "A"),
    ]
    for axis in (0, 1, 2):
        reads = {name: read_nifti(path, axis=axis) for name, (path, _) in files.items()}
        ras = _stack(reads["ras"])
        for name, slices in reads.items():
            assert len(slices) == RAS_SHAPE[axis], name
            assert slices[0].meta["orientation"] == "canonical"
            assert slices[0].meta["shape"] == RAS_SHAPE
            np.testing.assert_array_equal(_stack(slices), ras, err_msg=f"{name} axis {axis}")
    for name, (path, _) in files.items():
        slices = read_nifti(path, intensity=LESION_WINDOW)  # axis 2: axial slices
        meta = slices[0].meta
        assert np.unravel_index(np.argmax(_stack(slices)), RAS_SHAPE) == LESION, name
        # What nibabel itself calls the closest canonical image.
        canonical = nib.as_closest_canonical(nib.load(str(path)))
        np.testing.assert_allclose(meta["array_affine"], canonical.affine, atol=1e-5)
        expected = np.clip(canonical.get_fdata(dtype=np.float32) / 1000, 0, 1)
        np.testing.assert_allclose(_stack(slices), expected, atol=1e-6)
        # The source's own affine, header and shape are kept for writing back.
        np.testing.assert_allclose(meta["affine"], nib.load(str(path)).affine, atol=1e-5)
        assert meta["source_shape"] == nib.load(str(path)).shape
    for name in ("ras", "lps"):
        meta = read_nifti(files[name][0])[0].meta
        np.testing.assert_allclose(meta["array_affine"], RAS_AFFINE, atol=1e-5)


def test_nifti_native_slices_follow_the_file_order(tmp_path: Path, nib: Any) -> None:
    files = stored_orientations(nib, tmp_path)
    stacks = {}
    for name, (path, lesion) in files.items():
        slices = read_nifti(path, intensity=LESION_WINDOW, orientation="native")
        meta = slices[0].meta
        stored = nib.load(str(path)).get_fdata(dtype=np.float32)
        assert meta["orientation"] == "native" and meta["shape"] == stored.shape
        assert len(slices) == stored.shape[2]
        stacks[name] = _stack(slices)
        np.testing.assert_allclose(stacks[name], np.clip(stored / 1000, 0, 1), atol=1e-6)
        assert np.unravel_index(np.argmax(stacks[name]), stored.shape) == lesion, name
        np.testing.assert_array_equal(meta["ornt"], [[0, 1], [1, 1], [2, 1]])
        assert to_source_order(stacks[name], meta) is stacks[name]  # nothing to undo
    # LPS in its own order is RAS flipped left-right and front-back.
    np.testing.assert_array_equal(stacks["lps"], stacks["ras"][::-1, ::-1, :])
    assert not np.array_equal(stacks["lps"], stacks["ras"])


def test_nifti_canonical_maps_go_back_to_the_source_voxel_order(tmp_path: Path, nib: Any) -> None:
    for name, (path, lesion) in stored_orientations(nib, tmp_path).items():
        stored = nib.load(str(path)).get_fdata(dtype=np.float32)
        for axis in (0, 1, 2):
            slices = read_nifti(path, axis=axis, intensity=LESION_WINDOW)
            back = to_source_order(_stack(slices), slices[0].meta)
            assert back.shape == stored.shape == slices[0].meta["source_shape"]
            np.testing.assert_allclose(back, np.clip(stored / 1000, 0, 1), atol=1e-6)
            assert np.unravel_index(np.argmax(back), back.shape) == lesion, (name, axis)
        # The recorded transforms are nibabel's: source -> RAS+ and back.
        meta = slices[0].meta
        source = nib.orientations.io_orientation(nib.load(str(path)).affine)
        np.testing.assert_array_equal(meta["ornt"], source)
        canonical = nib.orientations.axcodes2ornt("RAS")
        np.testing.assert_array_equal(
            meta["to_source"], nib.orientations.ornt_transform(canonical, source)
        )


def test_nifti_orientation_through_the_registry_and_errors(tmp_path: Path, nib: Any) -> None:
    files = stored_orientations(nib, tmp_path)
    lps = files["lps"][0]
    assert read(lps)[0].meta["orientation"] == "canonical"  # the default
    native = read(lps, intensity=LESION_WINDOW, orientation="native")
    assert native[0].meta["orientation"] == "native"
    np.testing.assert_array_equal(
        _stack(native), _stack(read_nifti(lps, intensity=LESION_WINDOW, orientation="native"))
    )
    with pytest.raises(UserError, match="--orientation must be canonical or native"):
        read_nifti(lps, orientation="RAS")
    # An affine that gives one voxel axis no direction cannot be made canonical.
    header = nib.Nifti1Header()
    header.set_sform(np.diag([1.0, 0, 1, 1]), code="scanner")  # nibabel writes it as it is
    flat_axis = tmp_path / "flat.nii"
    nib.Nifti1Image(lesion_volume(), None, header).to_filename(str(flat_axis))
    with pytest.raises(UserError, match=r"cannot read NIfTI .*flat\.nii.*--orientation native"):
        read_nifti(flat_axis)
    assert len(read_nifti(flat_axis, orientation="native")) == RAS_SHAPE[2]
    # 2-D images are not reoriented.
    picture = RNG.random((8, 9)).astype(np.float32)
    flipped = save_nifti(nib, tmp_path / "lp.nii.gz", picture, np.diag([-1.0, -1, 1, 1]))
    (s,) = read(flipped)
    assert s.meta["orientation"] == "native" and s.meta["shape"] == (8, 9)
    np.testing.assert_allclose(s.image, minmax(picture), atol=1e-6)


def test_nifti_shipped_las_sample_is_made_canonical(nib: Any) -> None:
    data_path = Path(pytest.importorskip("nibabel.testing").data_path)
    path = data_path / "anatomical.nii"
    img = nib.load(str(path))
    assert nib.aff2axcodes(img.affine) == ("L", "A", "S")
    canonical = nib.as_closest_canonical(img)
    slices = read(path)
    assert len(slices) == canonical.shape[2] and slices[0].image.shape == canonical.shape[:2]
    assert slices[0].meta["shape"] == canonical.shape
    np.testing.assert_allclose(slices[0].meta["array_affine"], canonical.affine, atol=1e-5)
    data = canonical.get_fdata(dtype=np.float32)
    lo = data.min(axis=(0, 1), keepdims=True)
    hi = data.max(axis=(0, 1), keepdims=True)
    np.testing.assert_allclose(_stack(slices), (data - lo) / (hi - lo), atol=1e-6)
    native = read(path, orientation="native")
    np.testing.assert_array_equal(_stack(native), _stack(slices)[::-1])  # L -> R: axis 0 flipped
    back = to_source_order(_stack(slices), slices[0].meta)
    np.testing.assert_array_equal(back, _stack(native))
