"""One scan, one answer: a study reaching iqeclip as a DICOM series, as its NIfTI conversion
(SimpleITK's, and nibabel's in other voxel orders), as NRRD or MetaImage written by SimpleITK
(in the series' order and reoriented) or as PNG slices exported from a viewer reaches the model
as the same pictures and gets the same scores, slice numbers and positions; the maps written for
a series lie on the grid ITK reads."""

from __future__ import annotations

import contextlib
import csv
from pathlib import Path

import numpy as np
import pytest
import torch

from iqeclip.cli.main import main
from iqeclip.data.items import read_items
from iqeclip.data.readers import reading_from
from tests.integration.conftest import predict_argv
from tests.scans import Study, sitk_convert

WINDOW = (0.5, 401.0)  # integer HU never fall on a rounding tie: 510 (HU + 200) != 401 (2n + 1)
READING = reading_from("0.5,401", None)

pydicom = pytest.importorskip("pydicom")
nib = pytest.importorskip("nibabel")


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture
def study(tmp_path: Path) -> tuple[Study, dict[str, Path]]:
    scan = Study()
    series = scan.write_dicom(pydicom, tmp_path / "series")
    files = {
        "dicom": series,
        "nifti": scan.write_nifti(nib, tmp_path / "nibabel.nii.gz"),
        "pir": scan.write_nifti(nib, tmp_path / "pir.nii.gz", "PIR"),
        "lpi": scan.write_nifti(nib, tmp_path / "lpi.nii.gz", "LPI"),
    }
    with contextlib.suppress(ImportError):  # SimpleITK comes with the medical extra
        files["sitk"] = sitk_convert(series, tmp_path / "sitk.nii.gz")
        files["nrrd"] = sitk_convert(series, tmp_path / "sitk.nrrd")
        files["mha"] = sitk_convert(series, tmp_path / "sitk.mha")
        files["nrrd_pir"] = sitk_convert(series, tmp_path / "pir.nrrd", "PIR")
        files["mhd_lpi"] = sitk_convert(series, tmp_path / "lpi.mhd", "LPI")
    return scan, files


def test_every_format_reaches_the_model_as_the_same_pictures(study, tmp_path):
    scan, files = study
    expected = np.clip((scan.hu.astype(np.float64) - WINDOW[0] + WINDOW[1] / 2) / WINDOW[1], 0, 1)
    pngs = scan.write_pngs(tmp_path / "png", WINDOW)
    png_inputs = [next(read_items(p, 64)).model_input for p in pngs]
    for name, path in files.items():
        items = list(read_items(path, 64, READING))
        by_position = sorted(items, key=lambda i: i.slice_mm)
        assert len(items) == scan.slices, name
        for k, item in enumerate(by_position):
            # the picture as a DICOM viewer shows the stored slice: the hand-windowed pixels
            np.testing.assert_allclose(
                item.display[..., 0], np.rint(expected[k] * 255), atol=0, err_msg=name
            )
            assert torch.equal(item.model_input, png_inputs[k]), (name, k)
    if "sitk" not in files:
        pytest.skip("SimpleITK is not installed: its conversion was not compared")


def test_scores_slice_numbers_and_positions_agree(study, checkpoint, tmp_path):
    scan, files = study
    results = {}
    for name in ("dicom", "nifti", "sitk", "nrrd", "mha", "nrrd_pir"):
        if name not in files:
            continue
        out = tmp_path / f"out_{name}"
        argv = predict_argv(checkpoint, files[name], out=out)
        assert main([*argv, "--window", "0.5,401"]) == 0
        results[name] = _rows(out / "predictions.csv")
    reference = results["dicom"]
    for name, rows in results.items():
        assert sorted(int(r["slice"]) for r in rows) == list(range(scan.slices)), name
        if name == "nrrd_pir":  # its file numbers the slices from the top: compare by position
            rows = sorted(rows, key=lambda r: float(r["slice_mm"]))
        else:
            assert [r["slice"] for r in rows] == [str(k) for k in range(scan.slices)], name
        assert [r["score"] for r in rows] == [r["score"] for r in reference], name
        assert [r["slice_mm"] for r in rows] == [r["slice_mm"] for r in reference], name
    for k, row in enumerate(reference):  # the slice centre's S coordinate, by the definition
        centre = scan.world_ras((scan.rows - 1) / 2, (scan.columns - 1) / 2, k)
        assert float(row["slice_mm"]) == pytest.approx(centre[2], abs=1e-3)


def test_file_slice_numbers_of_a_volume_stored_the_other_way(study, checkpoint, tmp_path):
    """Stored PIR, the axial slices run along the file's axis 1 from superior to inferior:
    the rows number them as the file does, the lesion's slice included."""
    scan, files = study
    out = tmp_path / "out"
    assert main([*predict_argv(checkpoint, files["pir"], out=out), "--window", "0.5,401"]) == 0
    rows = _rows(out / "predictions.csv")
    stored = nib.load(str(files["pir"]))
    assert nib.aff2axcodes(stored.affine) == ("P", "I", "R")
    data = np.asarray(stored.dataobj)
    lesion = int(np.unravel_index(np.argmax(data), data.shape)[1])  # its slice in the file
    assert lesion == scan.slices - 1 - 2  # slice 2 of the series, counted from the top
    by_slice = {int(r["slice"]): r for r in rows}
    assert sorted(by_slice) == list(range(scan.slices))
    centre = scan.world_ras((scan.rows - 1) / 2, (scan.columns - 1) / 2, 2)
    assert float(by_slice[lesion]["slice_mm"]) == pytest.approx(centre[2], abs=1e-3)


def test_series_map_lies_on_the_grid_itk_reads(study, checkpoint, tmp_path):
    scan, files = study
    out = tmp_path / "out"
    argv = [*predict_argv(checkpoint, files["dicom"], out=out), "--window", "0.5,401"]
    assert main([*argv, "--outputs", "npy"]) == 0  # the per-slice maps, to compare
    written = nib.load(str(out / "series_anomaly.nii.gz"))
    assert written.shape == (scan.columns, scan.rows, scan.slices)  # 48 x 40 x 6, not 40 x 48
    np.testing.assert_allclose(written.affine, scan.grid_affine(), atol=1e-4)
    assert int(written.header["qform_code"]) == 1 and int(written.header["sform_code"]) == 1
    assert written.header.get_xyzt_units()[0] == "mm"
    maps = {int(r["slice"]): r for r in _rows(out / "predictions.csv")}
    data = np.asarray(written.dataobj)
    for k in range(scan.slices):  # each plane is that slice's map, transposed onto the grid
        stored_map = np.load(out / f"series_s{k:03d}_map.npy")
        np.testing.assert_allclose(data[:, :, k], stored_map.T, atol=1e-6)
        assert f"series_s{k:03d}_map.npy" in maps[k]["outputs"]
    sitk = pytest.importorskip("SimpleITK")
    theirs = sitk.ReadImage(str(sitk_convert(files["dicom"], tmp_path / "ref.nii.gz")))
    ours = sitk.ReadImage(str(out / "series_anomaly.nii.gz"))
    assert ours.GetSize() == theirs.GetSize()
    np.testing.assert_allclose(ours.GetSpacing(), theirs.GetSpacing(), atol=1e-4)
    np.testing.assert_allclose(ours.GetOrigin(), theirs.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(ours.GetDirection(), theirs.GetDirection(), atol=1e-4)
