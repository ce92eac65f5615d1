"""A DICOM series' results as DICOM: ``--outputs dicom-seg,dicom-pmap`` writes a Segmentation
and a Parametric Map that reference the source series and its instances, name the algorithm,
pass dicom3tools' validator, and read back (highdicom, pydicom) frame by frame as our mask and
map on the right source instance, in the instance's stored pixel order."""

from __future__ import annotations

import csv
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from iqeclip import __version__
from iqeclip.cli.main import main
from iqeclip.model.detector import IQEClip
from tests.integration.conftest import calibrated, predict_argv
from tests.integration.test_predict_formats import PIXEL, _map_is_the_input
from tests.scans import Study

pydicom = pytest.importorskip("pydicom")
hd = pytest.importorskip("highdicom")
nib = pytest.importorskip("nibabel")

WINDOW = "500,400"  # [300, 700] HU -> [0, 1]: the lesions (700, 900 HU) are 1, the rest 0
# what a scanner writes that the Study leaves out (type 2 attributes the objects copy)
IDENTITY = {
    "PatientName": "Doe^Jane",
    "PatientBirthDate": "19700101",
    "PatientSex": "F",
    "StudyDate": "20240105",
    "StudyTime": "101500",
    "StudyID": "7",
    "AccessionNumber": "A42",
    "ReferringPhysicianName": "",
}


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def dciodvfy(path: Path) -> str:
    """dicom3tools' validator's report on ``path`` (skip where it is not installed: make
    dicom3tools)."""
    tool = shutil.which("dciodvfy")
    if tool is None:
        pytest.skip("dciodvfy is not installed (make dicom3tools)")
    done = subprocess.run([tool, str(path)], capture_output=True, text=True, timeout=60)
    return done.stdout + done.stderr


def _source_uid(frame_item) -> str:
    """The SOPInstanceUID of the source instance a frame was derived from."""
    derivation = frame_item.DerivationImageSequence[0]
    return derivation.SourceImageSequence[0].ReferencedSOPInstanceUID


@pytest.fixture
def predicted(checkpoint, tmp_path, monkeypatch):
    """The Study written as a CT series (non-square, oblique) and predicted with both objects
    by a calibrated checkpoint whose map is the input."""
    monkeypatch.setattr(IQEClip, "predict", _map_is_the_input)
    scan = Study()
    series = scan.write_dicom(pydicom, tmp_path / "series", **IDENTITY)
    ckpt = calibrated(checkpoint, tmp_path, pixel=PIXEL)
    out = tmp_path / "out"
    argv = predict_argv(ckpt, series, out=out)
    assert main([*argv, "--window", WINDOW, "--outputs", "dicom-seg,dicom-pmap"]) == 0
    return scan, series, ckpt, out


def test_segmentation_and_parametric_map_lie_on_their_source_instances(predicted):
    scan, _, ckpt, out = predicted
    rows = _rows(out / "predictions.csv")
    assert [r["outputs"] for r in rows[:-1]] == [""] * (scan.slices - 1)
    names = ["series_anomaly.nii.gz", "series_mask.nii.gz", "series_pmap.dcm", "series_seg.dcm"]
    assert sorted(rows[-1]["outputs"].split(";")) == names
    # our volumes, on the grid (columns, rows, slices): plane k is slice k transposed
    maps = np.asarray(nib.load(str(out / "series_anomaly.nii.gz")).dataobj)
    masks = np.asarray(nib.load(str(out / "series_mask.nii.gz")).dataobj)
    slice_of = {f"{scan.series_uid}.{k + 1}": k for k in range(scan.slices)}  # tests/scans.py

    seg = hd.seg.segread(str(out / "series_seg.dcm"))
    pmap = pydicom.dcmread(str(out / "series_pmap.dcm"))
    for ds in (seg, pmap):
        assert ds.StudyInstanceUID == scan.study_uid and ds.FrameOfReferenceUID == scan.frame_uid
        assert ds.PatientID == scan.patient and ds.PatientName == "Doe^Jane"
        assert ds.SeriesInstanceUID != scan.series_uid
        (referenced,) = ds.ReferencedSeriesSequence
        assert referenced.SeriesInstanceUID == scan.series_uid
        assert {i.ReferencedSOPInstanceUID for i in referenced.ReferencedInstanceSequence} == set(
            slice_of
        )
        assert ds.ContentLabel == "IQECLIP" and ds.Manufacturer == "iqeclip"
        assert ds.SoftwareVersions == __version__ and ds.DeviceSerialNumber == ckpt.name
        assert ds.Rows == scan.rows and ds.Columns == scan.columns  # 40 x 48: as stored
        assert ds.NumberOfFrames == scan.slices
    (segment,) = seg.SegmentSequence
    (algorithm,) = segment.SegmentationAlgorithmIdentificationSequence
    assert (algorithm.AlgorithmName, algorithm.AlgorithmVersion) == ("iqeclip", __version__)
    assert ckpt.name in algorithm.AlgorithmParameters
    assert segment.SegmentAlgorithmType == "AUTOMATIC"

    frames = {"seg": seg.pixel_array, "pmap": pmap.pixel_array}
    assert frames["pmap"].dtype == np.float32
    seen = set()
    for name, ds in (("seg", seg), ("pmap", pmap)):
        for i, item in enumerate(ds.PerFrameFunctionalGroupsSequence):
            k = slice_of[_source_uid(item)]
            seen.add((name, k))
            position = item.PlanePositionSequence[0].ImagePositionPatient
            np.testing.assert_allclose([float(v) for v in position], scan.position(k), atol=1e-4)
            ours = masks[:, :, k].T if name == "seg" else maps[:, :, k].T
            np.testing.assert_array_equal(frames[name][i], ours)
            if name == "seg":  # the lesions of the Study, by their stored rows and columns
                assert frames[name][i][6, 35] == (k == 2) and frames[name][i][29, 8] == (k == 3)
                assert not frames[name][i][20, 20]
    assert len(seen) == 2 * scan.slices


def test_both_objects_pass_dciodvfy(predicted):
    _, _, _, out = predicted
    for name in ("series_seg.dcm", "series_pmap.dcm"):
        report = dciodvfy(out / name)
        print(f"dciodvfy {name}:\n{report}")
        errors = [line for line in report.splitlines() if line.startswith("Error")]
        assert errors == [], name


def test_dicom_outputs_are_checked_before_any_work(checkpoint, bench, tmp_path, capsys):
    scan = Study(slices=3)
    series = scan.write_dicom(pydicom, tmp_path / "series")
    image = next((bench / "Brain_AD" / "test" / "good" / "img").iterdir())
    cases = [
        (checkpoint, series, "dicom-seg", "--outputs dicom-seg needs a pixel threshold"),
        (checkpoint, image, "dicom-pmap", "--outputs dicom-pmap: no input is a DICOM series"),
        (checkpoint, series, "dicom-rt", "--outputs 'dicom-rt': choose from overlay, map"),
    ]
    for ckpt, source, outputs, message in cases:
        out = tmp_path / f"out_{outputs}"
        assert main([*predict_argv(ckpt, source, out=out), "--outputs", outputs]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: {message}") and err.count("\n") == 1
        assert not out.exists() or not any(out.iterdir())


def test_inputs_that_are_not_series_are_named_once(checkpoint, bench, tmp_path, capsys):
    scan = Study(slices=3)
    series = scan.write_dicom(pydicom, tmp_path / "series")
    images = bench / "Brain_AD" / "test" / "good" / "img"
    out = tmp_path / "out"
    argv = [*predict_argv(checkpoint, series, images, out=out), "--outputs", "dicom-pmap"]
    assert main(argv) == 0
    said = capsys.readouterr().out
    n_images = len(list(images.iterdir()))
    assert said.count("written only for DICOM series") == 1
    assert f"not for {n_images} other inputs" in said
    assert [p.name for p in out.glob("*.dcm")] == ["series_pmap.dcm"]
    rows = _rows(out / "predictions.csv")
    assert all(r["outputs"] == "" for r in rows if r["slice"] == "")  # named: no image files
