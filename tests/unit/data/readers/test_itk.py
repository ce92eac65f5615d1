"""NRRD and MetaImage volumes: files written by SimpleITK itself, checked in world coordinates
against ITK's own index-to-physical mapping (LPS), not against files iqeclip wrote."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from iqeclip.data.readers import Limits, OverLimit, declared, read, reader_for, reading_from
from iqeclip.data.readers.itk import ItkReader, itk_image, itk_voxels, ras_affine
from iqeclip.errors import UserError

sitk = pytest.importorskip("SimpleITK")

LESION = (13, 4, 5)  # voxel (x, y, z) of the brightest voxel


def _oblique(size=(20, 16, 9), spacing=(0.7, 0.9, 2.5), degrees=25.0):
    """A SimpleITK volume with an oblique direction (about two axes) and one bright voxel."""
    voxels = np.random.default_rng(0).random(size[::-1]).astype(np.float32)  # (z, y, x)
    voxels[LESION[2], LESION[1], LESION[0]] = 5.0
    image = sitk.GetImageFromArray(voxels)
    a, b = np.radians(degrees), np.radians(degrees / 2)
    about_z = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    about_x = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    image.SetDirection((about_x @ about_z).ravel().tolist())
    image.SetSpacing(spacing)
    image.SetOrigin((-12.0, 30.5, 7.25))
    return image


def _lps_to_ras(point) -> np.ndarray:
    return np.asarray(point, np.float64) * np.array([-1.0, -1.0, 1.0])


@pytest.mark.parametrize("suffix", [".nrrd", ".mha", ".mhd", ".nhdr"])
def test_the_affine_maps_voxels_where_itk_does(tmp_path: Path, suffix: str):
    path = tmp_path / f"scan{suffix}"
    sitk.WriteImage(_oblique(), str(path))
    slices = read(path)
    geometry = slices[0].geometry
    assert geometry.grid == (20, 16, 9)
    written = sitk.ReadImage(str(path))
    for index in [(0, 0, 0), (19, 15, 8), (3, 11, 2)]:
        ras = geometry.affine @ np.array([*index, 1.0])
        itk = _lps_to_ras(written.TransformIndexToPhysicalPoint(index))
        np.testing.assert_allclose(ras[:3], itk, atol=1e-9)
    assert geometry.suffix == (".nrrd" if suffix in (".nrrd", ".nhdr") else ".mha")


def test_the_lesion_lies_where_itk_puts_it(tmp_path: Path):
    """The brightest slice is the lesion's, its position is the lesion's world S coordinate
    along the slicing axis, and its brightest pixel puts back onto the lesion's voxel."""
    path = tmp_path / "scan.nrrd"
    image = _oblique()
    sitk.WriteImage(image, str(path))
    slices = read(path, intensity=reading_from("2.5,5", None).intensity)  # one scale for all
    view = slices[0].geometry.view
    best = max(slices, key=lambda s: float(s.image.max()))
    assert best.index == LESION[view.axis]
    plane = np.zeros_like(best.image)
    plane[np.unravel_index(np.argmax(best.image), plane.shape)] = 1
    volume = np.zeros(slices[0].geometry.grid, np.float32)
    view.put(volume, best.index, plane)
    assert tuple(int(i) for i in np.argwhere(volume)[0]) == LESION
    centre = [(n - 1) / 2 for n in image.GetSize()]
    centre[view.axis] = LESION[view.axis]
    ras = _lps_to_ras(image.TransformContinuousIndexToPhysicalPoint(centre))
    normal = slices[0].geometry.affine[:3, view.axis]
    assert best.slice_mm == pytest.approx(ras[int(np.argmax(np.abs(normal)))], abs=1e-6)


def test_nrrd_and_nifti_of_one_volume_give_the_same_pictures(tmp_path: Path):
    nib = pytest.importorskip("nibabel")
    image = _oblique()
    sitk.WriteImage(image, str(tmp_path / "scan.nrrd"))
    sitk.WriteImage(image, str(tmp_path / "scan.nii.gz"))  # ITK's own NIfTI writer
    nrrd, nifti = read(tmp_path / "scan.nrrd"), read(tmp_path / "scan.nii.gz")
    assert len(nrrd) == len(nifti) == 9
    for a, b in zip(nrrd, nifti, strict=True):
        np.testing.assert_array_equal(a.image, b.image)
        assert a.slice_mm == pytest.approx(b.slice_mm, abs=1e-4)
    np.testing.assert_allclose(
        nrrd[0].geometry.affine, nib.load(str(tmp_path / "scan.nii.gz")).affine, atol=1e-4
    )


def test_itk_image_is_the_inverse_of_ras_affine(tmp_path: Path):
    image = _oblique()
    affine = ras_affine(image.GetOrigin(), image.GetSpacing(), image.GetDirection())
    voxels = itk_voxels(image)
    again = itk_image(voxels, affine)
    np.testing.assert_allclose(again.GetOrigin(), image.GetOrigin(), atol=1e-12)
    np.testing.assert_allclose(again.GetSpacing(), image.GetSpacing(), atol=1e-12)
    np.testing.assert_allclose(again.GetDirection(), image.GetDirection(), atol=1e-12)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(again), sitk.GetArrayFromImage(image))
    assert voxels[LESION] == 5.0


def test_a_2d_metaimage_is_one_slice(tmp_path: Path):
    picture = np.arange(12 * 10, dtype=np.uint16).reshape(10, 12)  # (rows, columns)
    sitk.WriteImage(sitk.GetImageFromArray(picture), str(tmp_path / "picture.mha"))
    (one,) = read(tmp_path / "picture.mha")
    assert one.index is None
    assert one.image.shape in ((10, 12), (12, 10))
    assert float(one.image.max()) == 1.0 and float(one.image.min()) == 0.0


def test_a_4d_file_with_one_volume_is_read(tmp_path: Path):
    voxels = np.random.default_rng(1).random((1, 5, 6, 7)).astype(np.float32)  # (t, z, y, x)
    sitk.WriteImage(sitk.GetImageFromArray(voxels, isVector=False), str(tmp_path / "one.nrrd"))
    assert len(read(tmp_path / "one.nrrd")) == 5


@pytest.mark.parametrize(
    ("name", "make", "reason"),
    [
        ("rgb.nrrd", lambda: sitk.Image([8, 8, 3], sitk.sitkVectorUInt8, 3), "3 values per voxel"),
        ("labels.seg.nrrd", lambda: sitk.Image([8, 8, 3], sitk.sitkUInt8), "segmentation"),
        (
            "series.mha",
            lambda: sitk.GetImageFromArray(np.zeros((2, 3, 4, 5, 6), np.float32), isVector=False),
            "only 2-D and 3-D",
        ),
    ],
)
def test_what_is_no_scalar_volume_is_refused_by_name(tmp_path: Path, name, make, reason):
    path = tmp_path / name
    sitk.WriteImage(make(), str(path))
    with pytest.raises(UserError, match=reason) as caught:
        read(path)
    assert str(path) in str(caught.value) and "\n" not in str(caught.value)


def test_garbage_and_a_missing_data_file_are_one_line_errors(tmp_path: Path):
    garbage = tmp_path / "garbage.nrrd"
    garbage.write_bytes(b"NRRD0004\nnot a header\n")
    with pytest.raises(UserError, match=r"cannot read NRRD .*garbage\.nrrd") as caught:
        read(garbage)
    assert "\n" not in str(caught.value)
    header = tmp_path / "detached.mhd"
    sitk.WriteImage(_oblique(), str(header))
    next(tmp_path.glob("detached.*raw")).unlink()
    with pytest.raises(UserError, match=r"cannot read MetaImage .*detached\.mhd") as caught:
        read(header)
    assert "\n" not in str(caught.value)


def test_limits_are_checked_from_the_header(tmp_path: Path):
    path = tmp_path / "big.mha"
    sitk.WriteImage(_oblique(), str(path))
    assert declared(path).slices == 9
    with pytest.raises(OverLimit, match=r"big\.mha"):
        declared(path, limits=Limits(slices=4))
    with pytest.raises(OverLimit):
        read(path, limits=Limits(slices=4))


def test_the_registry_names_the_itk_formats(tmp_path: Path):
    for name in ("a.nrrd", "a.NHDR", "a.mha", "a.mhd"):
        (tmp_path / name).write_bytes(b"x")
        assert isinstance(reader_for(tmp_path / name), ItkReader), name
