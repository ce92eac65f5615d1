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
        slices = read_nifti(path, axis=axis, orientation="native")  # the file's voxel order
        assert len(slices) == volume.shape[axis % 3]
        assert [s.index for s in slices] == list(range(len(slices)))
        s = slices[0]
        assert s.image.shape == shape and s.image.dtype == np.float32
        assert s.geometry.view.axis == axis % 3 and s.geometry.grid == (5, 6, 7)
        np.testing.assert_allclose(s.geometry.affine, affine, atol=1e-6)  # stored as float32
        assert isinstance(s.geometry.header, nib.Nifti1Header)
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
    assert len(slices) == shape[2] and slices[0].image.shape == shape[:2][::-1]  # rows: A-P
    assert len(read_nifti(data_path / "standard.nii.gz", axis=0)) == shape[0]
    with pytest.raises(UserError, match=r"cannot read NIfTI .*example4d.*4-D"):
        read_nifti(data_path / "example4d.nii.gz")


def test_nifti_scaling_window_4d_single_volume_and_2d(tmp_path: Path, nib: Any) -> None:
    stored = RNG.integers(0, 500, size=(4, 5, 3, 1), dtype=np.int16)
    img = nib.Nifti1Image(stored, np.eye(4))
    img.header.set_slope_inter(2.0, -100.0)
    path = tmp_path / "scaled.nii"
    nib.save(img, str(path))
    slices = read_nifti(path, intensity=Intensity(window=(300, 400)), orientation="native")
    assert len(slices) == 3 and slices[0].geometry.header.get_data_shape() == (4, 5, 3, 1)
    assert slices[0].geometry.grid == (4, 5, 3)
    values = stored[..., 0] * 2.0 - 100.0  # scl_slope / scl_inter applied
    stacked = np.stack([s.image for s in slices], axis=2)
    np.testing.assert_allclose(stacked, np.clip((values - 100) / 400, 0, 1), atol=1e-6)

    flat = save_nifti(nib, tmp_path / "flat.nii.gz", RNG.random((8, 9)).astype(np.float32))
    (s,) = read(flat, orientation="native")
    assert s.index is None and s.image.shape == (8, 9) and s.geometry.grid == (8, 9, 1)
    with pytest.raises(UserError, match=r"^axis must be 0, 1 or 2"):
        read_nifti(save_nifti(nib, tmp_path / "v.nii", np.zeros((2, 2, 2), np.float32)), axis=3)


def test_nifti_nonfinite_and_constant_slices(tmp_path: Path, nib: Any) -> None:
    volume = RNG.random((6, 7, 4)).astype(np.float32) + 1.0
    volume[0, 0, 0] = np.nan
    volume[1, 2, 0] = np.inf
    volume[2, 3, 0] = -np.inf
    volume[:, :, 1] = np.nan  # no finite value at all
    volume[:, :, 2] = 3.0  # constant
    path = save_nifti(nib, tmp_path / "bad.nii.gz", volume)
    slices = read_nifti(path, orientation="native")
    assert all(np.isfinite(s.image).all() for s in slices)
    s0, s1, s2, s3 = slices
    assert s0.levels.nonfinite == 3 and not s0.levels.constant
    first = volume[:, :, 0].astype(np.float64)
    good = np.isfinite(first)
    expected = minmax(np.where(good, first, first[good].min()))  # bad -> the finite minimum
    np.testing.assert_allclose(s0.image, expected, atol=1e-6)
    assert s0.image[0, 0] == s0.image[1, 2] == s0.image[2, 3] == 0.0
    assert s1.levels.nonfinite == 6 * 7 and s1.levels.constant and not s1.image.any()
    assert s2.levels.nonfinite == 0 and s2.levels.constant and not s2.image.any()
    assert s3.levels.nonfinite == 0 and not s3.levels.constant


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
    """The slices put back into the file's voxel grid by their views."""
    geometry = slices[0].geometry
    grid = np.zeros(geometry.grid, np.float32)
    for s in slices:
        geometry.view.put(grid, s.index or 0, s.image)
    return grid


def reoriented(nib: Any, folder: Path, codes: str) -> tuple[Path, tuple[int, ...]]:
    """:func:`lesion_volume` stored with voxel axes ``codes`` (e.g. "PIR"), by nibabel's own
    orientation tools: (file, the lesion's voxel in that file)."""
    ornt = nib.orientations.ornt_transform(
        nib.orientations.axcodes2ornt("RAS"), nib.orientations.axcodes2ornt(tuple(codes))
    )
    data = nib.orientations.apply_orientation(lesion_volume(), ornt)
    affine = RAS_AFFINE @ nib.orientations.inv_ornt_aff(ornt, RAS_SHAPE)
    path = save_nifti(nib, folder / f"{codes}.nii.gz", np.ascontiguousarray(data), affine)
    return path, tuple(int(i) for i in np.unravel_index(np.argmax(data), data.shape))


def radiological_axial(volume: np.ndarray, k: int) -> np.ndarray:
    """Axial slice ``k`` of a RAS+ volume as a DICOM viewer shows it, by hand: row ``r`` is
    voxel ``y = ny - 1 - r`` (anterior at the top), column ``c`` is ``x = nx - 1 - c`` (the
    patient's right on the left)."""
    nx, ny = volume.shape[:2]
    rows, cols = np.meshgrid(np.arange(ny), np.arange(nx), indexing="ij")
    return volume[nx - 1 - cols, ny - 1 - rows, k]


def test_nifti_slices_reach_the_model_in_the_radiological_view(tmp_path: Path, nib: Any) -> None:
    files = {name: path for name, (path, _) in stored_orientations(nib, tmp_path).items()}
    for codes in ("PIR", "LPI", "ASL"):
        files[codes] = reoriented(nib, tmp_path, codes)[0]
    expected = np.clip(lesion_volume() / 1000, 0, 1)
    x, y, z = LESION
    nx, ny, nz = RAS_SHAPE
    for name, path in files.items():
        slices = read_nifti(path, intensity=LESION_WINDOW)  # axis 2: axial, radiological
        assert slices[0].geometry.orientation == "radiological"
        codes = nib.aff2axcodes(nib.load(str(path)).affine)
        along = next(i for i, c in enumerate(codes) if c in "SI")
        assert slices[0].geometry.view.axis == along, name
        assert [s.index for s in slices] == list(range(nz))  # the file's own slice numbers
        for s in slices:
            k = s.index if codes[along] == "S" else nz - 1 - s.index  # its RAS slice
            np.testing.assert_allclose(s.image, radiological_axial(expected, k), atol=1e-6)
            # where it lies: the S coordinate of its centre, from the RAS affine
            assert s.slice_mm == pytest.approx(RAS_AFFINE[2, 2] * k + RAS_AFFINE[2, 3])
        # world check: the lesion's anterior neighbour (600) lies one row above it
        lesion_slice = next(
            s
            for s in slices
            if s.slice_mm == pytest.approx(RAS_AFFINE[2, 2] * z + RAS_AFFINE[2, 3])
        )
        r, c = np.unravel_index(np.argmax(lesion_slice.image), lesion_slice.image.shape)
        assert (r, c) == (ny - 1 - y, nx - 1 - x), name
        assert lesion_slice.image[r - 1, c] == pytest.approx(0.6), name


def test_nifti_slice_numbers_are_the_file_voxel_index(tmp_path: Path, nib: Any) -> None:
    path, lesion = reoriented(nib, tmp_path, "PIR")  # axial slices run along the file's axis 1
    slices = read_nifti(path, intensity=LESION_WINDOW)
    hit = max(slices, key=lambda s: s.image.max())
    assert hit.geometry.view.axis == 1 and hit.index == lesion[1]
    assert hit.index != LESION[2]  # the RAS+ array would have numbered it otherwise


def test_nifti_maps_go_back_to_the_source_voxel_order(tmp_path: Path, nib: Any) -> None:
    files = {name: entry for name, entry in stored_orientations(nib, tmp_path).items()}
    files["PIR"] = reoriented(nib, tmp_path, "PIR")
    for name, (path, lesion) in files.items():
        stored = nib.load(str(path)).get_fdata(dtype=np.float32)
        for orientation in ("radiological", "canonical", "native"):
            for axis in (0, 1, 2):
                slices = read_nifti(path, axis, LESION_WINDOW, orientation)
                back = _stack(slices)
                assert back.shape == stored.shape == slices[0].geometry.source_shape
                np.testing.assert_allclose(back, np.clip(stored / 1000, 0, 1), atol=1e-6)
                assert np.unravel_index(np.argmax(back), back.shape) == lesion, (name, axis)


def test_nifti_canonical_rule_keeps_the_older_pictures(tmp_path: Path, nib: Any) -> None:
    """Checkpoints trained before the radiological view saw RAS+ array slices: the rule that
    they keep gives exactly those (nibabel's closest canonical image), numbered by the file."""
    files = stored_orientations(nib, tmp_path)
    for name, (path, _) in files.items():
        canonical = nib.as_closest_canonical(nib.load(str(path)))
        data = np.clip(canonical.get_fdata(dtype=np.float32) / 1000, 0, 1)
        for axis in (0, 1, 2):
            slices = read_nifti(path, axis, LESION_WINDOW, "canonical")
            assert len(slices) == RAS_SHAPE[axis], name
            images = [s.image for s in slices]
            expected = [np.take(data, i, axis=axis) for i in range(RAS_SHAPE[axis])]
            # the file order along this axis may run the other way from RAS+
            codes = nib.aff2axcodes(nib.load(str(path)).affine)
            if codes[slices[0].geometry.view.axis] in "LPI":
                expected = expected[::-1]
            for got, want in zip(images, expected, strict=True):
                np.testing.assert_allclose(got, want, atol=1e-6, err_msg=f"{name} {axis}")


def test_nifti_native_slices_follow_the_file_order(tmp_path: Path, nib: Any) -> None:
    files = stored_orientations(nib, tmp_path)
    for name, (path, lesion) in files.items():
        slices = read_nifti(path, intensity=LESION_WINDOW, orientation="native")
        stored = nib.load(str(path)).get_fdata(dtype=np.float32)
        assert (
            slices[0].geometry.orientation == "native" and slices[0].geometry.grid == stored.shape
        )
        assert len(slices) == stored.shape[2]
        for s in slices:
            np.testing.assert_allclose(s.image, np.clip(stored[:, :, s.index] / 1000, 0, 1))
        assert np.unravel_index(np.argmax(_stack(slices)), stored.shape) == lesion, name


def test_nifti_orientation_through_the_registry_and_errors(tmp_path: Path, nib: Any) -> None:
    files = stored_orientations(nib, tmp_path)
    lps = files["lps"][0]
    assert read(lps)[0].geometry.orientation == "radiological"  # the default
    native = read(lps, intensity=LESION_WINDOW, orientation="native")
    assert native[0].geometry.orientation == "native"
    with pytest.raises(UserError, match=r"^orientation must be one of radiological, canonical"):
        read_nifti(lps, orientation="RAS")
    # An affine that gives one voxel axis no direction cannot be turned.
    header = nib.Nifti1Header()
    header.set_sform(np.diag([1.0, 0, 1, 1]), code="scanner")  # nibabel writes it as it is
    flat_axis = tmp_path / "flat.nii"
    nib.Nifti1Image(lesion_volume(), None, header).to_filename(str(flat_axis))
    with pytest.raises(UserError, match=r"cannot read NIfTI .*flat\.nii.*--orientation native"):
        read_nifti(flat_axis)
    assert len(read_nifti(flat_axis, orientation="native")) == RAS_SHAPE[2]
    # A 2-D image is one slice across its third voxel axis, turned like a volume's.
    picture = RNG.random((8, 9)).astype(np.float32)
    las = save_nifti(nib, tmp_path / "las.nii.gz", picture, np.diag([-1.0, 1, 1, 1]))
    (s,) = read(las)
    assert s.index is None and s.geometry.source_shape == (8, 9)
    # voxel axis 0 runs to the left (already as viewed), axis 1 anterior (rows flip)
    np.testing.assert_allclose(s.image, minmax(picture).T[::-1, :], atol=1e-6)
    (old,) = read(las, orientation="canonical")  # the older rule never turned 2-D images
    np.testing.assert_allclose(old.image, minmax(picture), atol=1e-6)


def test_nifti_complex_values_are_refused(tmp_path: Path, nib: Any) -> None:
    data = (RNG.random((4, 5, 3)) + 1j * RNG.random((4, 5, 3))).astype(np.complex64)
    path = save_nifti(nib, tmp_path / "complex.nii.gz", data)
    with pytest.raises(UserError, match=r"complex\.nii\.gz: its voxels are complex64"):
        read(path)


def test_nifti_shipped_las_sample_in_the_radiological_view(nib: Any) -> None:
    data_path = Path(pytest.importorskip("nibabel.testing").data_path)
    path = data_path / "anatomical.nii"
    img = nib.load(str(path))
    assert nib.aff2axcodes(img.affine) == ("L", "A", "S")
    canonical = nib.as_closest_canonical(img)
    data = canonical.get_fdata(dtype=np.float32)
    slices = read(path)
    assert len(slices) == canonical.shape[2]
    for s in slices[:: max(1, len(slices) // 5)]:
        np.testing.assert_allclose(s.image, minmax(radiological_axial(data, s.index)), atol=1e-6)
