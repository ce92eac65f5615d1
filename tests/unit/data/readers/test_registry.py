"""Tests for the registry: a path's type, DICOM series folders and :func:`read`'s dispatch."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from iqeclip.data.readers.registry import is_wide_image, kind, read, read_dicom_series
from iqeclip.errors import UserError
from tests.unit.data.readers.conftest import dicom_sample, write_ct


def test_kind_by_suffix_then_magic(tmp_path: Path, pydicom: Any) -> None:
    files = tmp_path / "files"
    files.mkdir()
    for name, expected in [
        ("scan.DCM", "dicom"),
        ("scan.dicom", "dicom"),
        ("brain.nii.gz", "nifti"),
        ("brain.nii", "nifti"),
        ("photo.png", "image"),
        ("photo.JPEG", "image"),
        ("stack.tiff", "image"),
        ("notes.txt", None),
    ]:
        (files / name).write_bytes(b"\0" * 200)
        assert kind(files / name) == expected, name
    assert kind(files / "missing.dcm") is None and kind(tmp_path / "missing") is None
    no_suffix = files / "IM0001"
    shutil.copy(dicom_sample(pydicom, "CT_small.dcm"), no_suffix)
    assert kind(no_suffix) == "dicom"  # the DICM magic at byte 128
    named_png = files / "odd.png"
    shutil.copy(dicom_sample(pydicom, "CT_small.dcm"), named_png)
    assert kind(named_png) == "image"  # a known suffix wins over the magic
    (files / "text").write_text("x" * 200)
    assert kind(files / "text") is None
    empty = tmp_path / "empty"
    empty.mkdir()
    assert kind(empty) == "series" and kind(files) == "series"  # folders are read as series


def test_is_wide_image(tmp_path: Path) -> None:
    wide = tmp_path / "wide.png"
    Image.fromarray(np.arange(12, dtype=np.uint16).reshape(3, 4) * 1000).save(wide)
    eight = tmp_path / "eight.png"
    Image.fromarray(np.zeros((3, 4), np.uint8)).save(eight)
    (tmp_path / "broken.png").write_bytes(b"not an image")
    assert is_wide_image(wide)
    assert not is_wide_image(eight) and not is_wide_image(tmp_path / "broken.png")
    assert not is_wide_image(tmp_path / "missing.png")


def test_series_order_by_instance_then_position(tmp_path: Path, pydicom: Any) -> None:
    series = tmp_path / "series"
    series.mkdir()
    for name, instance in [("a.dcm", 3), ("b.dcm", 1), ("c.dcm", 2)]:
        write_ct(pydicom, series / name, InstanceNumber=instance)
    (series / "notes.txt").write_text("not a DICOM file")
    slices = read_dicom_series(series)
    assert [s.source.name for s in slices] == ["b.dcm", "c.dcm", "a.dcm"]
    assert [s.index for s in slices] == [0, 1, 2]
    assert all(s.meta["series"] == series and s.meta["frame"] is None for s in slices)
    assert [s.meta["instance"] for s in slices] == [1.0, 2.0, 3.0]
    assert read(series)[0].source.name == "b.dcm"

    by_z = tmp_path / "by_z"
    by_z.mkdir()
    for name, z in [("x.dcm", 5.0), ("y.dcm", -5.0), ("z.dcm", 0.0)]:
        write_ct(pydicom, by_z / name, InstanceNumber=7, ImagePositionPatient=[0.0, 0.0, z])
    assert [s.source.name for s in read_dicom_series(by_z)] == ["y.dcm", "z.dcm", "x.dcm"]


def test_series_errors(tmp_path: Path, pydicom: Any) -> None:
    empty = tmp_path / "empty_series"
    empty.mkdir()
    with pytest.raises(UserError, match="no DICOM files"):
        read_dicom_series(empty)
    with pytest.raises(UserError, match="no DICOM files"):
        read(empty)
    with pytest.raises(UserError, match="no such folder"):
        read_dicom_series(tmp_path / "missing_series")


def test_read_dispatch_and_errors(tmp_path: Path, pydicom: Any) -> None:
    no_suffix = tmp_path / "IM0001"
    shutil.copy(dicom_sample(pydicom, "CT_small.dcm"), no_suffix)
    (s,) = read(no_suffix)
    assert s.meta["modality"] == "CT"
    with pytest.raises(UserError, match="no such file or folder"):
        read(tmp_path / "missing.dcm")
    (tmp_path / "notes.xyz").write_text("hello")
    with pytest.raises(UserError, match="unsupported file type"):
        read(tmp_path / "notes.xyz")
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(UserError, match=r"cannot read image .*empty\.png: empty file"):
        read(tmp_path / "empty.png")
