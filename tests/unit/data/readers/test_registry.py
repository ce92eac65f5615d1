"""Tests for the registry: a path's reader, DICOM series folders and :func:`read`'s dispatch."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from iqeclip.data.readers import read, read_dicom_series, reader_for
from iqeclip.errors import UserError
from tests.unit.data.readers.conftest import dicom_sample, write_ct


def _name(path: Path) -> str | None:
    """The name of a path's reader, None for no reader."""
    reader = reader_for(path)
    return None if reader is None else reader.name


def test_reader_by_suffix_then_magic(tmp_path: Path, pydicom: Any) -> None:
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
        assert _name(files / name) == expected, name
    assert _name(files / "missing.dcm") is None and _name(tmp_path / "missing") is None
    no_suffix = files / "IM0001"
    shutil.copy(dicom_sample(pydicom, "CT_small.dcm"), no_suffix)
    assert _name(no_suffix) == "dicom"  # the DICM magic at byte 128
    named_png = files / "odd.png"
    shutil.copy(dicom_sample(pydicom, "CT_small.dcm"), named_png)
    assert _name(named_png) == "image"  # a known suffix wins over the magic
    (files / "text").write_text("x" * 200)
    assert _name(files / "text") is None
    empty = tmp_path / "empty"
    empty.mkdir()
    assert _name(empty) == "series" and _name(files) == "series"  # folders are read as series


def test_page_count_from_the_header(tmp_path: Path) -> None:
    from iqeclip.data.readers.pil import page_count

    pages = [Image.fromarray(np.full((3, 4), 50 * k, np.uint8)) for k in range(3)]
    pages[0].save(tmp_path / "stack.tif", save_all=True, append_images=pages[1:])
    pages[0].save(tmp_path / "one.png")
    (tmp_path / "broken.png").write_bytes(b"not an image")
    assert page_count(tmp_path / "stack.tif") == 3 and page_count(tmp_path / "one.png") == 1
    assert page_count(tmp_path / "broken.png") == 1  # reading it names the problem


def test_series_order_by_instance_then_position(tmp_path: Path, pydicom: Any) -> None:
    series = tmp_path / "series"
    series.mkdir()
    for name, instance in [("a.dcm", 3), ("b.dcm", 1), ("c.dcm", 2)]:
        path = write_ct(pydicom, series / name, InstanceNumber=instance)
        ds = pydicom.dcmread(path)
        del ds.ImagePositionPatient  # no positions: InstanceNumber orders them
        ds.save_as(path)
    (series / "notes.txt").write_text("not a DICOM file")
    slices = read_dicom_series(series)
    assert [s.source.name for s in slices] == ["b.dcm", "c.dcm", "a.dcm"]
    assert [s.index for s in slices] == [0, 1, 2]
    assert all(s.dicom.series == series and s.dicom.frame is None for s in slices)
    assert [s.dicom.instance for s in slices] == [1.0, 2.0, 3.0]
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
    assert s.dicom.modality == "CT"
    with pytest.raises(UserError, match="no such file or folder"):
        read(tmp_path / "missing.dcm")
    (tmp_path / "notes.xyz").write_text("hello")
    with pytest.raises(UserError, match="unsupported file type"):
        read(tmp_path / "notes.xyz")
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(UserError, match=r"cannot read image .*empty\.png: empty file"):
        read(tmp_path / "empty.png")


AXIAL_UID, OBLIQUE_UID = "1.2.826.0.1.3680043.8.498.101", "1.2.826.0.1.3680043.8.498.202"


def write_two_series(pydicom: Any, folder: Path) -> dict[str, list[str]]:
    """Two 3-slice series in one folder, files in shuffled order: an axial one (SeriesNumber 2)
    and an oblique one (SeriesNumber 5, tilted 30 degrees about x, shifted in-plane so that
    ImagePositionPatient[2] and InstanceNumber both give the wrong order). Returns each series'
    file names in slice order."""
    folder.mkdir(parents=True, exist_ok=True)
    t = np.deg2rad(30.0)
    row, col = np.array([1.0, 0.0, 0.0]), np.array([0.0, np.cos(t), np.sin(t)])
    normal = np.cross(row, col)
    oblique = [list(map(float, k * 2.0 * normal - k * 10.0 * col)) for k in range(3)]
    series = {
        AXIAL_UID: (2, [1.0, 0, 0, 0, 1.0, 0], [[0.0, 0.0, 2.0 * k] for k in range(3)], [1, 2, 3]),
        OBLIQUE_UID: (5, [*row, *col], oblique, [3, 2, 1]),
    }
    names = {AXIAL_UID: ["m.dcm", "c.dcm", "x.dcm"], OBLIQUE_UID: ["q.dcm", "a.dcm", "k.dcm"]}
    for uid, (number, orientation, positions, instances) in series.items():
        for k, name in enumerate(names[uid]):
            write_ct(
                pydicom,
                folder / name,
                SeriesInstanceUID=uid,
                SeriesNumber=number,
                SOPInstanceUID=f"{uid}.{k + 1}",
                ImageOrientationPatient=[float(v) for v in orientation],
                ImagePositionPatient=positions[k],
                InstanceNumber=instances[k],
                # a ramp, so that no slice is blank (constant slices get no score)
                pixels=100 * (k + 1) + np.arange(128)[None, :].repeat(128, axis=0) % 16,
            )
    return names


def truncated_ct(pydicom: Any, path: Path) -> Path:
    """A CT file of the axial series cut short in its pixel data (it reads, but cannot decode)."""
    write_ct(pydicom, path, SeriesInstanceUID=AXIAL_UID, SOPInstanceUID=f"{AXIAL_UID}.9")
    path.write_bytes(path.read_bytes()[:-5000])
    return path


def test_series_folder_split_by_uid_and_ordered_along_the_normal(
    tmp_path: Path, pydicom: Any
) -> None:
    folder = tmp_path / "export"
    names = write_two_series(pydicom, folder)
    slices = read_dicom_series(folder)
    assert [s.dicom.series_uid for s in slices] == [AXIAL_UID] * 3 + [OBLIQUE_UID] * 3
    assert [s.source.name for s in slices] == names[AXIAL_UID] + names[OBLIQUE_UID]
    assert [s.index for s in slices] == [0, 1, 2, 0, 1, 2]  # one volume per series
    assert [s.dicom.sop_instance_uid for s in slices[3:]] == [
        f"{OBLIQUE_UID}.{k}" for k in (1, 2, 3)
    ]
    assert [s.dicom.series_number for s in (slices[0], slices[3])] == [2.0, 5.0]
    assert all(s.dicom.series == folder for s in slices)
    assert [s.source.name for s in read(folder)] == [s.source.name for s in slices]


def test_series_without_positions_falls_back_to_instance(tmp_path: Path, pydicom: Any) -> None:
    folder = tmp_path / "no_position"
    folder.mkdir()
    for name, instance, z in [("a.dcm", 2, 0.0), ("b.dcm", 3, -9.0), ("c.dcm", 1, 9.0)]:
        write_ct(pydicom, folder / name, InstanceNumber=instance, ImagePositionPatient=[0, 0, z])
    ds = pydicom.dcmread(folder / "b.dcm")
    del ds.ImagePositionPatient  # not every file has a position: InstanceNumber decides
    ds.save_as(folder / "b.dcm")
    assert [s.source.name for s in read_dicom_series(folder)] == ["c.dcm", "a.dcm", "b.dcm"]


def test_series_bad_file_listed_or_named(tmp_path: Path, pydicom: Any) -> None:
    folder = tmp_path / "export"
    names = write_two_series(pydicom, folder)
    broken = truncated_ct(pydicom, folder / "broken.dcm")
    with pytest.raises(UserError, match=r"cannot read DICOM .*broken\.dcm"):
        read_dicom_series(folder)
    bad: list[tuple[Path, str]] = []
    slices = read(folder, bad=bad)
    assert [s.source.name for s in slices] == names[AXIAL_UID] + names[OBLIQUE_UID]
    assert [p for p, _ in bad] == [broken] and "broken.dcm" in bad[0][1]
