"""One lesion, one place in the world, in every format: a CT study written as a DICOM series
(oblique, non-square), its NIfTI conversion stored PIR, and SimpleITK's NRRD and MetaImage
conversions (one reoriented) go through the Python API, and the maximum of every map volume
predict writes, read back with SimpleITK (an independent reader) and mapped through the written
file's own geometry, lands on the lesion's world position."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import iqeclip
from iqeclip.model.detector import IQEClip
from tests.scans import Study, sitk_convert

sitk = pytest.importorskip("SimpleITK")
pydicom = pytest.importorskip("pydicom")
nib = pytest.importorskip("nibabel")

WINDOW = "450,900"  # the 900 HU lesion -> 1, the 700 HU one below it, the background -> 0
LESION = (2, range(5, 9), range(30, 40))  # hu[2, 5:9, 30:40] = 900 (slice, rows, columns)


def _map_is_the_input(self, images, setting):
    """A stand-in for IQEClip.predict whose anomaly map is the input's grey value."""
    maps = images.mean(dim=1)
    return maps, maps.amax(dim=(1, 2))


@pytest.fixture
def inputs(tmp_path: Path) -> tuple[Study, dict[str, Path]]:
    scan = Study()
    series = scan.write_dicom(pydicom, tmp_path / "series")
    return scan, {
        "series": series,
        "pir.nii.gz": scan.write_nifti(nib, tmp_path / "pir.nii.gz", "PIR"),
        "scan.nrrd": sitk_convert(series, tmp_path / "scan.nrrd"),
        "lpi.nrrd": sitk_convert(series, tmp_path / "lpi.nrrd", "LPI"),
        "scan.mha": sitk_convert(series, tmp_path / "scan.mha"),
    }


def test_every_formats_map_peaks_on_the_lesion(inputs, checkpoint, tmp_path, monkeypatch):
    monkeypatch.setattr(IQEClip, "predict", _map_is_the_input)
    scan, files = inputs
    to_grid = np.linalg.inv(scan.grid_affine())  # RAS mm -> (column, row, slice) of the study
    written = {}
    for name, path in files.items():
        out = tmp_path / f"out_{name}"
        result = iqeclip.predict(checkpoint, [path], out, window=WINDOW)
        assert len(result.volumes) == 1, name
        (anomaly,) = [p for p in out.iterdir() if "_anomaly." in p.name]
        written[name] = anomaly.name
        maps = sitk.ReadImage(str(anomaly))
        array = sitk.GetArrayFromImage(maps)  # (z, y, x)
        peak = np.unravel_index(np.argmax(array), array.shape)[::-1]
        lps = np.array(maps.TransformIndexToPhysicalPoint([int(i) for i in peak]))
        column, row, k = (to_grid @ np.array([*(lps * [-1, -1, 1]), 1.0]))[:3]
        assert k == pytest.approx(LESION[0], abs=1e-3), name
        assert LESION[1].start - 0.5 <= row <= LESION[1].stop - 0.5, name
        assert LESION[2].start - 0.5 <= column <= LESION[2].stop - 0.5, name
    assert written == {
        "series": "series_anomaly.nii.gz",
        "pir.nii.gz": "pir_anomaly.nii.gz",
        "scan.nrrd": "scan_anomaly.nrrd",
        "lpi.nrrd": "lpi_anomaly.nrrd",
        "scan.mha": "scan_anomaly.mha",
    }


def test_predictions_without_a_folder_keep_the_maps_of_an_nrrd(inputs, checkpoint):
    _, files = inputs
    result = iqeclip.predict(checkpoint, [files["scan.nrrd"]], window=WINDOW)
    assert len(result.slices) == 6 and all(p.map is not None for p in result.slices)
