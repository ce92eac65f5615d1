"""Label volumes in every format annotation tools save, on any grid: NIfTI, NRRD, 3D Slicer's
``.seg.nrrd`` (a labelmap and a layered one) and DICOM-SEG, aligned exactly or resampled by
nearest neighbour, checked against the DICOM definition of the study and ITK's own
index-to-world mapping, not against files iqeclip wrote."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from iqeclip.data.readers import Reading, read_slices, reading_from
from iqeclip.data.readers.labels import (
    aligned_labels,
    forget_labels,
    is_label_volume,
    label_slices,
    read_label_volume,
)
from iqeclip.data.readers.reading import parse_label_values
from iqeclip.errors import UserError
from tests.scans import Study, sitk_convert
from tests.unit.data.label_files import (
    itk_labels,
    slicer_metadata,
    study_labels,
    viewed_lesion,
    write_seg,
    write_series,
)

sitk = pytest.importorskip("SimpleITK")
nib = pytest.importorskip("nibabel")
pydicom = pytest.importorskip("pydicom")

RESAMPLED = "resampled by nearest neighbour"


@pytest.fixture(autouse=True)
def _fresh():
    forget_labels()  # each test logs its own resampling line


def _said(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if RESAMPLED in r.getMessage()]


def _oblique_direction() -> np.ndarray:
    a, b = np.radians(25.0), np.radians(12.0)
    about_z = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    about_x = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    return about_x @ about_z


def _volume(size, spacing, origin, direction, array_zyx) -> object:
    image = sitk.GetImageFromArray(array_zyx)
    image.SetSpacing([float(s) for s in spacing])
    image.SetOrigin([float(o) for o in origin])
    image.SetDirection([float(d) for d in direction.ravel()])
    assert image.GetSize() == tuple(size)
    return image


@pytest.mark.parametrize("image_suffix", [".nrrd", ".nii.gz"])
def test_a_label_at_half_resolution_is_resampled_onto_the_image(tmp_path, caplog, image_suffix):
    """An NRRD label at half the resolution of its oblique image: each image voxel takes the
    label of the label voxel its centre lies in (world coordinates, by ITK), one log line."""
    direction = _oblique_direction()
    origin = np.array([-12.0, 30.5, 7.25])
    spacing = np.array([0.5, 0.5, 2.0])
    rng = np.random.default_rng(0)
    image = _volume(
        (40, 32, 10), spacing, origin, direction, rng.random((10, 32, 40)).astype(np.float32)
    )
    image_path = tmp_path / f"scan{image_suffix}"
    sitk.WriteImage(image, str(image_path))
    labels = np.zeros((5, 16, 20), np.uint8)  # (z, y, x)
    labels[2, 4:7, 5:8] = 1  # voxels x 5..7, y 4..6, z 2
    # half the resolution, voxel j covering image voxels 2j and 2j + 1 on every axis
    label_origin = origin + direction @ (spacing / 2)
    label = _volume((20, 16, 5), 2 * spacing, label_origin, direction, labels)
    mask = tmp_path / "labels.nrrd"
    sitk.WriteImage(label, str(mask))
    geometry = read_slices(image_path)[0].geometry
    with caplog.at_level(logging.INFO):
        got = aligned_labels(mask, geometry.grid, geometry.affine, image_path)
        aligned_labels(mask, geometry.grid, geometry.affine, image_path)  # said once
    expected = np.zeros((40, 32, 10), bool)
    expected[10:16, 8:14, 4:6] = True
    assert np.array_equal(got, expected)
    written, stored = sitk.ReadImage(str(image_path)), sitk.ReadImage(str(mask))
    for index in map(tuple, np.argwhere(got)):
        world = written.TransformIndexToPhysicalPoint([int(i) for i in index])
        assert stored[stored.TransformPhysicalPointToIndex(world)] == 1
    (line,) = _said(caplog)
    assert str(mask) in line and str(image_path) in line
    assert (
        "20x16x5 voxels of 1 x 1 x 4 mm" in line and "40x32x10 voxels of 0.5 x 0.5 x 2 mm" in line
    )


def _series_and_labels(tmp_path) -> tuple[Study, Path, np.ndarray]:
    study = Study()
    return study, write_series(pydicom, study, tmp_path / "series"), study_labels(study)


def _lesions(slices, got, values=(1, 2)) -> None:
    """The label slices are the lesions the model sees, for the label values chosen."""
    slice_of = {1: 2, 2: 3}
    assert len(got) == len(slices)
    for k, labels in enumerate(got):
        chosen = [slice_of[v] for v in values]
        expected = viewed_lesion(slices, k) if k in chosen else np.zeros_like(labels)
        assert np.array_equal(labels, expected), k


def test_a_dicom_seg_lands_on_its_series_by_source_instance(tmp_path, caplog):
    study, folder, labels = _series_and_labels(tmp_path)
    seg = write_seg(pydicom, study, labels, tmp_path / "seg.dcm")
    assert is_label_volume(seg)
    assert not is_label_volume(next(folder.glob("*.dcm")))  # an image file is no label volume
    slices = read_slices(folder)
    with caplog.at_level(logging.INFO):
        _lesions(slices, label_slices(seg, folder))
    assert not _said(caplog)  # exact: by the SOPInstanceUIDs it references
    _lesions(slices, label_slices(seg, folder, Reading(label_values=(2,))), values=(2,))
    fractional = write_seg(pydicom, study, labels, tmp_path / "fractional.dcm", fractional=True)
    _lesions(slices, label_slices(fractional, folder))


@pytest.mark.parametrize("suffix,orient", [(".nii.gz", None), (".nrrd", "PIR")])
def test_a_dicom_seg_on_a_conversion_of_its_series_by_geometry(tmp_path, caplog, suffix, orient):
    """The series converted (dcm2niix or Slicer would hand it over), the SEG holding only its
    non-empty frames: aligned by the SEG's frame-of-reference geometry, resampled."""
    study, folder, labels = _series_and_labels(tmp_path)
    seg = write_seg(pydicom, study, labels, tmp_path / "seg.dcm")
    image = sitk_convert(folder, tmp_path / f"scan{suffix}", orient)
    slices = read_slices(image)
    with caplog.at_level(logging.INFO):
        got = label_slices(seg, image)
    assert len(_said(caplog)) == 1
    on_series = read_slices(folder)
    lesion_of = {}
    for k, labels_k in enumerate(got):  # each converted slice whose picture is a series lesion
        if labels_k.any():
            assert np.array_equal(labels_k, viewed_lesion(slices, k))
            lesion_of[k] = next(
                j for j in (2, 3) if np.allclose(slices[k].image, on_series[j].image)
            )
    assert sorted(lesion_of.values()) == [2, 3]


def test_a_dicom_seg_on_another_frame_of_reference_is_said(tmp_path, caplog):
    """A SEG of one series on another one (another frame of reference, the same scanner
    coordinates): aligned by geometry, with a warning."""
    study, _, labels = _series_and_labels(tmp_path)
    seg = write_seg(pydicom, study, labels, tmp_path / "seg.dcm")
    other = Study(
        series_uid="1.2.826.0.1.3680043.8.498.51", frame_uid="1.2.826.0.1.3680043.8.498.52"
    )
    folder = write_series(pydicom, other, tmp_path / "other")
    with caplog.at_level(logging.INFO):
        _lesions(read_slices(folder), label_slices(seg, folder))
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 1 and "another frame of reference" in warned[0]
    assert len(_said(caplog)) == 1


@pytest.mark.parametrize("cropped", [False, True])
def test_nrrd_and_slicer_labelmaps_equal_the_nifti_label(tmp_path, caplog, cropped):
    """An NRRD label on the series' grid, and a ``.seg.nrrd`` labelmap as 3D Slicer saves it
    (segment metadata; cropped to the labelled slices), give the NIfTI label's slices."""
    study, folder, labels = _series_and_labels(tmp_path)
    nifti = tmp_path / "labels.nii.gz"
    nib.save(nib.Nifti1Image(np.transpose(labels, (2, 1, 0)), study.grid_affine()), str(nifti))
    nrrd = tmp_path / "labels.nrrd"
    sitk.WriteImage(itk_labels(sitk, study, labels), str(nrrd))
    first = 2 if cropped else 0
    part = labels[2:4] if cropped else labels
    segmentation = slicer_metadata(
        itk_labels(sitk, study, part, first), [("necrosis", 1, 0), ("oedema", 2, 0)]
    )
    seg_nrrd = tmp_path / "labels.seg.nrrd"
    sitk.WriteImage(segmentation, str(seg_nrrd))
    slices = read_slices(folder)
    with caplog.at_level(logging.INFO):
        by_nifti = label_slices(nifti, folder)
        _lesions(slices, by_nifti)
        for mask in (nrrd, seg_nrrd):
            assert is_label_volume(mask)
            assert all(map(np.array_equal, label_slices(mask, folder), by_nifti))
    assert len(_said(caplog)) == (1 if cropped else 0)  # the cropped one is another grid
    chosen = Reading(label_values=(1,))
    for mask in (nifti, nrrd, seg_nrrd):
        _lesions(slices, label_slices(mask, folder, chosen), values=(1,))


@pytest.mark.parametrize("layered", ["components", "fourth axis"])
def test_a_layered_slicer_segmentation_counts_any_layer(tmp_path, layered):
    """Two overlapping segments in two layers (as Slicer saves overlapping segments): a voxel
    is labelled when any layer's value counts; ``--label_values`` chooses per layer."""
    study, folder, _ = _series_and_labels(tmp_path)
    shape = (study.slices, study.rows, study.columns)
    first, second = np.zeros(shape, np.uint8), np.zeros(shape, np.uint8)
    first[2, 5:9, 30:40] = 1
    second[2, 7:12, 35:45] = 2  # overlaps the first segment
    layers = [itk_labels(sitk, study, layer) for layer in (first, second)]
    image = sitk.Compose(layers) if layered == "components" else sitk.JoinSeries(layers)
    assert (image.GetNumberOfComponentsPerPixel(), image.GetDimension()) == (
        (2, 3) if layered == "components" else (1, 4)
    )
    slicer_metadata(image, [("tumour", 1, 0), ("oedema", 2, 1)])
    mask = tmp_path / "layers.seg.nrrd"
    sitk.WriteImage(image, str(mask))
    assert read_label_volume(mask).data.shape == (study.columns, study.rows, study.slices, 2)
    slices = read_slices(folder)
    viewed = slices[2].geometry.view
    for values, expected in (
        (None, (first > 0) | (second > 0)),
        ((2,), second > 0),
        ((1,), first > 0),
    ):
        got = label_slices(mask, folder, Reading(label_values=values))
        grid = np.transpose(expected, (2, 1, 0))  # (c, r, k): the series' grid
        assert all(np.array_equal(g, viewed.take(grid, k)) for k, g in enumerate(got))
        assert got[2].sum() == expected[2].sum()


def test_label_values_choose_from_a_multi_label_volume(tmp_path):
    """BraTS labels 1, 2 and 4 in one NIfTI volume: each choice labels its own voxels."""
    data = np.zeros((12, 10, 5), np.uint8)
    data[1:3, 1:3, 1] = 1
    data[5:8, 5:7, 2] = 2
    data[9:11, 2:4, 3] = 4
    affine = np.diag([0.9, 1.1, 3.0, 1.0])
    image, mask = tmp_path / "flair.nii.gz", tmp_path / "seg.nii.gz"
    nib.save(nib.Nifti1Image(np.random.default_rng(0).random(data.shape), affine), str(image))
    nib.save(nib.Nifti1Image(data, affine), str(mask))
    for text, voxels in (
        (None, [4, 6, 4]),
        ("1,4", [4, 0, 4]),
        ("2", [0, 6, 0]),
        ("4,2,4", [0, 6, 4]),
    ):
        reading = reading_from(None, None, label_values=text)
        got = label_slices(mask, image, reading)
        assert [int(got[k].sum()) for k in (1, 2, 3)] == voxels, text
    assert reading_from(None, None, label_values="4,2,4").label_values == (2, 4)


@pytest.mark.parametrize("text", ["", " ", "0", "1,,2", "a", "-1", "1.5", "1;2", "²"])
def test_bad_label_values_are_one_line_naming_the_option(text):
    with pytest.raises(UserError, match=r"^label_values ") as caught:
        parse_label_values(text)
    assert "\n" not in str(caught.value)
    with pytest.raises(UserError, match="label_values"):
        Reading(label_values=(0,))


def test_a_label_that_does_not_overlap_its_image_names_both(tmp_path):
    data = np.zeros((8, 8, 4), np.uint8)
    data[2:4, 2:4, 1] = 1
    image, mask = tmp_path / "scan.nii.gz", tmp_path / "elsewhere.nii.gz"
    nib.save(nib.Nifti1Image(np.ones(data.shape, np.float32), np.eye(4)), str(image))
    far = np.eye(4)
    far[:3, 3] = 1000.0  # a metre away
    nib.save(nib.Nifti1Image(data, far), str(mask))
    with pytest.raises(UserError) as caught:
        label_slices(mask, image)
    message = str(caught.value)
    assert str(mask) in message and str(image) in message and "overlap" in message
    assert "\n" not in message


def test_a_label_stored_in_another_voxel_order_is_exact(tmp_path, caplog):
    """The exact way is kept: the same grid stored with its axes permuted and flipped is put
    back without resampling (no log line)."""
    study, folder, labels = _series_and_labels(tmp_path)
    stored = nib.Nifti1Image(np.transpose(labels, (2, 1, 0)), study.grid_affine())
    stored = stored.as_reoriented([[2, -1], [0, 1], [1, -1]])
    mask = tmp_path / "reordered.nii.gz"
    nib.save(stored, str(mask))
    with caplog.at_level(logging.INFO):
        _lesions(read_slices(folder), label_slices(mask, folder))
    assert not _said(caplog)


def test_what_is_not_a_label_volume(tmp_path):
    folder = _series_and_labels(tmp_path)[1]
    with pytest.raises(UserError, match=r"cannot read label volume .*no such file"):
        read_label_volume(tmp_path / "missing.nrrd")
    with pytest.raises(UserError, match=r"no DICOM-SEG"):
        read_label_volume(next(folder.glob("*.dcm")))
    garbage = tmp_path / "broken.nrrd"
    garbage.write_bytes(b"NRRD0004\nnot a header\n")
    with pytest.raises(UserError, match=r"cannot read label volume .*broken\.nrrd"):
        label_slices(garbage, folder)
