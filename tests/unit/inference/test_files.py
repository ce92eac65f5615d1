"""The one table of predict's file names, the volume writers keyed by format, and the DICOM
checks made before any work."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from iqeclip.data.readers import Geometry
from iqeclip.data.readers.orientation import View
from iqeclip.errors import UserError
from iqeclip.inference import volume_files
from iqeclip.inference.dicom_outputs import check_dicom_outputs
from iqeclip.inference.files import (
    Outputs,
    is_output_name,
    kind_of,
    volume_name,
    volume_target,
    volume_temporary,
)
from iqeclip.inference.predict import _outputs


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("scan_s003_map.npy", "npy"),
        ("scan_s003_mask.png", "mask"),
        ("scan_anomaly.nii.gz", "anomaly"),
        ("scan_mask.nii.gz", "volume_mask"),
        ("scan_anomaly.nrrd", "anomaly"),
        ("scan_mask.nrrd", "volume_mask"),
        ("scan_anomaly.mha", "anomaly"),
        ("scan_mask.mha", "volume_mask"),
        ("series_seg.dcm", "dicom-seg"),
        ("series_pmap.dcm", "dicom-pmap"),
    ],
)
def test_every_file_predict_writes_is_named_in_the_table(name, kind):
    assert is_output_name(name) and kind_of(name) == kind


@pytest.mark.parametrize("name", ["scan.nrrd", "scan.seg.nrrd", "brain.mha", "IM0001.dcm", "a.png"])
def test_inputs_are_not_outputs(name):
    assert not is_output_name(name)
    with pytest.raises(ValueError):
        kind_of(name)


def test_volume_names_follow_the_format():
    assert volume_name("ct", "anomaly", ".nrrd") == "ct_anomaly.nrrd"
    assert volume_name("ct", "volume_mask", ".mha") == "ct_mask.mha"
    for fmt in (".nii.gz", ".nrrd", ".mha"):
        path = Path("/out") / f"ct_anomaly{fmt}"
        tmp = volume_temporary(path)
        assert tmp.name.endswith(f".tmp{fmt}") and tmp.parent == path.parent
        assert volume_target(tmp.name) == path.name
    assert volume_target(".ct_anomaly.nrrd.tmp.mha") is None  # not one of ours
    assert volume_target(".ct_anomaly.nrrd.abcdefgh.tmp") is None


def test_default_outputs_leave_the_slices_of_volumes_out():
    default = _outputs(None, None)
    assert default.of(False) == {"overlay", "map", "npy"} and default.of(True) == set()
    assert _outputs(None, 0.5).of(False) == {"overlay", "map", "npy", "mask"}
    assert _outputs(None, None, masks=True).of(True) == {"overlay"}  # what --masks draws on
    named = _outputs("npy,dicom-pmap", None)
    assert named == Outputs(frozenset({"npy"}), frozenset({"npy"}), frozenset({"dicom-pmap"}))
    with pytest.raises(UserError, match="choose from overlay, map, npy, mask, input, dicom-seg"):
        _outputs("dicom", None)


def test_dicom_outputs_are_checked_before_any_work(tmp_path):
    png = tmp_path / "a.png"
    png.write_bytes(b"")
    with pytest.raises(UserError, match=r"^outputs dicom-seg needs a pixel threshold"):
        check_dicom_outputs(frozenset({"dicom-seg"}), [png], None)
    with pytest.raises(UserError, match=r"^outputs dicom-pmap: no input is a DICOM series"):
        check_dicom_outputs(frozenset({"dicom-pmap"}), [png], None)
    assert check_dicom_outputs(frozenset(), [png], None) == []


def _geometry(suffix: str, affine: np.ndarray, shape: tuple[int, ...]) -> Geometry:
    return Geometry(shape, affine, View(), "radiological", shape, None, suffix)


def test_itk_volumes_keep_the_geometry_in_lps(tmp_path):
    sitk = pytest.importorskip("SimpleITK")
    c, s = np.cos(np.radians(25)), np.sin(np.radians(25))
    affine = np.eye(4)
    affine[:3, :3] = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]]) @ np.diag([0.7, 0.9, 2.5])
    affine[:3, 3] = [12.0, -30.0, 41.0]  # RAS
    data = np.zeros((6, 5, 4), np.float32)
    data[4, 1, 2] = 1.0
    for fmt in (".nrrd", ".mha"):
        path = tmp_path / f"v_anomaly{fmt}"
        volume_files.save_volume(path, data, _geometry(fmt, affine, data.shape))
        image = sitk.ReadImage(str(path))
        assert image.GetSize() == data.shape
        assert sitk.GetArrayFromImage(image).dtype == np.float32
        # voxel (4, 1, 2) lies at affine @ (4, 1, 2, 1) in RAS: (-x, -y, z) in ITK's LPS
        ras = affine @ np.array([4, 1, 2, 1.0])
        world = image.TransformIndexToPhysicalPoint((4, 1, 2))
        np.testing.assert_allclose(world, ras[:3] * [-1, -1, 1], atol=1e-6)
        assert sitk.GetArrayFromImage(image)[2, 1, 4] == 1.0
        assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_a_failed_volume_write_names_the_file_and_leaves_no_temporary(tmp_path, monkeypatch):
    def failing(tmp, data, geometry):
        tmp.write_bytes(b"half")
        raise OSError(28, "No space left on device")

    monkeypatch.setitem(volume_files._WRITERS, ".nii.gz", failing)
    path = tmp_path / "v_anomaly.nii.gz"
    geometry = _geometry(".nii.gz", np.eye(4), (2, 2, 2))
    with pytest.raises(UserError, match=r"v_anomaly.nii.gz: No space left on device$"):
        volume_files.save_volume(path, np.zeros((2, 2, 2), np.float32), geometry)
    assert list(tmp_path.iterdir()) == []


def test_a_volume_format_is_one_registration(tmp_path, monkeypatch):
    monkeypatch.setattr(volume_files, "_WRITERS", dict(volume_files._WRITERS))
    monkeypatch.setattr(volume_files, "VOLUME_FORMATS", list(volume_files.VOLUME_FORMATS))
    from iqeclip.inference import files

    monkeypatch.setattr(files, "VOLUME_FORMATS", volume_files.VOLUME_FORMATS)
    volume_files.register_volume_writer(".vtk", lambda tmp, data, g: np.save(tmp, data))
    assert kind_of("ct_mask.vtk") == "volume_mask" and is_output_name("ct_anomaly.vtk")
    with pytest.raises(ValueError, match="already registered"):
        volume_files.register_volume_writer(".nrrd", lambda tmp, data, g: None)
