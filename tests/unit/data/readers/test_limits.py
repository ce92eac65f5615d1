"""The readers' header checks (:mod:`iqeclip.data.readers.limits`): every format's declared size
is refused from its header, before anything is decoded (the decoders are made to fail here if
they run), in one line naming the file, the size and the limit; within the limits the files
read as before."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import PIL.ImageFile
import pytest

from iqeclip.data.readers import (
    DEFAULT_READING,
    Declared,
    Limits,
    OverLimit,
    declared,
    load_image,
    read,
)
from iqeclip.data.readers.pil import page_count
from iqeclip.data.sample import Sample
from iqeclip.data.validate import check_sample
from iqeclip.errors import UserError
from tests import bombs
from tests.unit.data.readers.conftest import dicom_sample, write_ct

SMALL = Limits(megapixels=0.06, slices=4, total_megapixels=0.2, options=True)
"""60000 pixels a slice (300 x 200 passes, 301 x 200 does not), 4 slices, 200000 pixels."""


def test_messages_name_the_size_the_limit_and_its_option() -> None:
    assert SMALL.slice_problem(300, 200) is None  # exactly at the limit
    assert SMALL.slice_problem(301, 200, "each slice") == (
        "each slice is 301 x 200 pixels, larger than the 0.06-megapixel limit "
        "(--max_megapixels raises it)"
    )
    assert SMALL.input_problem(4, 200_000) is None
    assert SMALL.input_problem(5, 10, "pages") == (
        "it holds 5 pages, more than the limit of 4 (--max_slices raises it)"
    )
    assert SMALL.input_problem(4, 200_001, "frames") == (
        "its 4 frames hold 0.2 megapixels, more than the limit of 0.2 megapixels in one input "
        "(--max_total_megapixels raises it)"
    )
    training = Limits()  # no options to name: training and testing
    assert training.slice_problem(8000, 7000) == (
        "image is 8000 x 7000 pixels, larger than the 50-megapixel limit"
    )
    with pytest.raises(OverLimit) as info:
        SMALL.check_input("scan.nii", 9, 0)
    assert (
        str(info.value)
        == "scan.nii: it holds 9 slices, more than the limit of 4 (--max_slices raises it)"
    )
    assert isinstance(info.value, UserError)


@pytest.fixture
def no_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every decoder fails the test if it runs: PIL's, nibabel's voxels, pydicom's pixels and
    its inflation of a deflated dataset."""
    nib = pytest.importorskip("nibabel")
    pydicom = pytest.importorskip("pydicom")

    def decoded(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("decoded before the header was checked")

    monkeypatch.setattr(PIL.ImageFile.ImageFile, "load", decoded)
    monkeypatch.setattr(nib.dataobj_images.DataobjImage, "get_fdata", decoded)
    monkeypatch.setattr(pydicom.dataset.Dataset, "pixel_array", property(decoded))
    monkeypatch.setattr(pydicom.filereader.zlib, "decompress", decoded)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (
            lambda d: bombs.png_zeros(d / "wide.png", 301, 200),
            "cannot read image {path}: image is 301 x 200 pixels, larger than the "
            "0.06-megapixel limit (--max_megapixels raises it)",
        ),
        (
            lambda d: bombs.tiff_pages(d / "stack.tif", 5, 10),
            "cannot read image {path}: it holds 5 pages, more than the limit of 4 "
            "(--max_slices raises it)",
        ),
        (
            lambda d: bombs.tiff_pages(d / "big.tif", 4, 240),
            "cannot read image {path}: its 4 pages hold 0.2 megapixels, more than the limit of "
            "0.2 megapixels in one input (--max_total_megapixels raises it)",
        ),
        (
            lambda d: bombs.nifti(d / "wide.nii.gz", (301, 200, 2), voxels=False),
            "cannot read NIfTI {path}: each slice is 301 x 200 pixels, larger than the "
            "0.06-megapixel limit (--max_megapixels raises it)",
        ),
        (
            lambda d: bombs.nifti(d / "long.nii.gz", (8, 8, 5)),
            "cannot read NIfTI {path}: it holds 5 slices, more than the limit of 4 "
            "(--max_slices raises it)",
        ),
        (
            lambda d: bombs.nifti(d / "huge.nii.gz", (60000, 60000, 1), voxels=False),
            "cannot read NIfTI {path}: each slice is 60000 x 60000 pixels, larger than the "
            "0.06-megapixel limit (--max_megapixels raises it)",
        ),
        (
            lambda d: bombs.dicom_deflated(d / "deflated.dcm", 200, 301),
            "cannot read DICOM {path}: image is 301 x 200 pixels, larger than the "
            "0.06-megapixel limit (--max_megapixels raises it)",
        ),
        (
            lambda d: bombs.dicom_rle(d / "rle.dcm", 200, 301),
            "cannot read DICOM {path}: image is 301 x 200 pixels, larger than the "
            "0.06-megapixel limit (--max_megapixels raises it)",
        ),
    ],
    ids=[
        "png",
        "tiff-pages",
        "tiff-pixels",
        "nifti-slice",
        "nifti-slices",
        "nifti2-bomb",
        "dicom-deflated",
        "dicom-rle",
    ],
)
def test_each_format_is_refused_from_its_header(tmp_path, no_decoding, make, message) -> None:
    path = make(tmp_path)
    for reading in (lambda: read(path, limits=SMALL), lambda: declared(path, limits=SMALL)):
        with pytest.raises(OverLimit) as info:
            reading()
        assert str(info.value) == message.format(path=path)


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda d: bombs.png_zeros(d / "a.png", 300, 200), Declared(1, 60_000)),
        (lambda d: bombs.tiff_pages(d / "a.tif", 4, 200), Declared(4, 160_000)),
        (lambda d: bombs.nifti(d / "a.nii.gz", (20, 30, 4)), Declared(4, 2400)),
        (lambda d: bombs.dicom_deflated(d / "a.dcm", 200, 300), Declared(1, 60_000)),
        (lambda d: bombs.dicom_rle(d / "r.dcm", 200, 300), Declared(1, 60_000)),
    ],
    ids=["png", "tiff", "nifti", "dicom-deflated", "dicom-rle"],
)
def test_within_the_limits_files_read_as_declared(tmp_path, make, expected) -> None:
    pytest.importorskip("nibabel")
    pytest.importorskip("pydicom")
    path = make(tmp_path)
    assert declared(path, limits=SMALL) == expected
    slices = read(path, limits=SMALL)
    assert len(slices) == expected.slices
    assert sum(s.image.shape[0] * s.image.shape[1] for s in slices) == expected.pixels


def test_nifti_slices_are_counted_across_the_slicing_plane(tmp_path: Path) -> None:
    pytest.importorskip("nibabel")
    path = bombs.nifti(tmp_path / "v.nii.gz", (3, 20, 5), voxels=False)
    assert declared(path, axis=0, limits=SMALL) == Declared(3, 300)  # sagittal: 3 slices
    with pytest.raises(OverLimit, match="it holds 5 slices"):
        declared(path, axis=2, limits=SMALL)


def test_a_deflated_dicom_without_its_preamble_is_checked_too(tmp_path, no_decoding) -> None:
    bomb = bombs.dicom_deflated(tmp_path / "with.dcm", 20000, 20000)
    bare = tmp_path / "bare.dcm"
    bare.write_bytes(bomb.read_bytes()[132:])  # pydicom reads it with force=True
    with pytest.raises(OverLimit, match="image is 20000 x 20000 pixels"):
        read(bare, limits=SMALL)


def test_a_deflated_dicom_padded_with_zeros_is_refused_before_pydicom_inflates_it(
    tmp_path: Path, no_decoding: None
) -> None:
    path = bombs.dicom_deflated(tmp_path / "padded.dcm", 10, 10, padding=200_000_000)
    assert path.stat().st_size < 300_000
    with pytest.raises(UserError) as info:
        read(path, limits=SMALL)
    assert str(info.value) == (
        f"cannot read DICOM {path}: its deflated dataset inflates to more than its pixel data "
        "needs (17 MB)"
    )


def test_a_deflated_dicom_within_the_limits_reads_as_pydicom_reads_it(tmp_path: Path) -> None:
    pydicom = pytest.importorskip("pydicom")
    ct = pydicom.dcmread(dicom_sample(pydicom, "CT_small.dcm"))
    ct.file_meta.TransferSyntaxUID = pydicom.uid.DeflatedExplicitVRLittleEndian
    deflated = tmp_path / "ct_deflated.dcm"
    ct.save_as(deflated, enforce_file_format=True)
    assert declared(deflated) == Declared(1, 128 * 128)
    (plain,) = read(dicom_sample(pydicom, "CT_small.dcm"))
    (again,) = read(deflated)
    np.testing.assert_array_equal(again.image, plain.image)


def test_a_series_folder_is_refused_by_its_number_of_files_before_any_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pydicom = pytest.importorskip("pydicom")
    from iqeclip.data.readers import dicom_series

    folder = tmp_path / "series"
    folder.mkdir()
    for i in range(5):
        shutil.copy(dicom_sample(pydicom, "CT_small.dcm"), folder / f"IM{i}.dcm")

    def opened(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a file was read")

    monkeypatch.setattr(dicom_series, "_dcmread", opened)
    for reading in (lambda: read(folder, limits=SMALL), lambda: declared(folder, limits=SMALL)):
        with pytest.raises(OverLimit) as info:
            reading()
        assert str(info.value) == (
            f"cannot read DICOM series {folder}: it holds 5 DICOM files, more than the limit "
            "of 4 (--max_slices raises it)"
        )


def test_a_series_folder_is_refused_by_its_frames_together(tmp_path: Path) -> None:
    pydicom = pytest.importorskip("pydicom")
    folder = tmp_path / "series"
    folder.mkdir()
    for i in range(4):  # one series, a slice every 2 mm
        write_ct(pydicom, folder / f"IM{i}.dcm", ImagePositionPatient=[0.0, 0.0, 2.0 * i])
    limits = Limits(megapixels=0.06, slices=4, total_megapixels=0.05, options=True)
    message = (
        f"cannot read DICOM series {folder}: its 4 frames hold 0.1 megapixels, more than the "
        "limit of 0.05 megapixels in one input (--max_total_megapixels raises it)"
    )
    for reading in (lambda: read(folder, limits=limits), lambda: declared(folder, limits=limits)):
        with pytest.raises(OverLimit) as info:
            reading()
        assert str(info.value) == message
    assert declared(folder, limits=SMALL) == Declared(4, 4 * 128 * 128)
    assert len(read(folder, limits=SMALL)) == 4


def test_pillows_own_bomb_error_is_reported_as_the_limit(tmp_path: Path) -> None:
    path = bombs.png_zeros(tmp_path / "huge.png", 20000, 10000)  # over Pillow's 179 MP
    with pytest.raises(OverLimit) as info:
        load_image(path, 32)
    assert str(info.value) == (
        f"cannot read image {path}: image is 20000 x 10000 pixels, larger than the "
        "50-megapixel limit"
    )
    assert page_count(path) == 1  # counting pages does not raise: reading names the problem


def test_the_training_checks_read_the_samples_limits(tmp_path: Path) -> None:
    path = bombs.tiff_pages(tmp_path / "stack.tif", 5, 10)
    check_sample(Sample(path, 0, None), 16)  # the default limits take 5 pages
    strict = Sample(path, 0, None, reading=DEFAULT_READING.__class__(limits=SMALL))
    with pytest.raises(UserError) as info:
        check_sample(strict, 16)
    assert str(info.value) == (
        f"image {path}: it holds 5 pages, more than the limit of 4 (--max_slices raises it)"
    )
