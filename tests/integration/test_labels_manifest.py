"""A manifest's label volumes in every format annotation tools save label the same slices:
a DICOM series labelled by a NIfTI file, an NRRD file, a 3D Slicer ``.seg.nrrd`` (cropped to
the lesions, as Slicer saves it) and a DICOM-SEG; ``--label_values`` chooses among the labels
through the manifest and the command line, and a bad value stops the run before any work."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from iqeclip.cli.main import main
from iqeclip.config import RunConfig
from iqeclip.data.manifest import read_manifest
from iqeclip.data.readers import Reading, mask_input
from iqeclip.engine.sources import run_reading
from tests.scans import Study
from tests.unit.data.label_files import (
    itk_labels,
    slicer_metadata,
    study_labels,
    write_seg,
    write_series,
)

sitk = pytest.importorskip("SimpleITK")
nib = pytest.importorskip("nibabel")
pydicom = pytest.importorskip("pydicom")
pytest.importorskip("highdicom")


def _label_files(tmp_path: Path) -> tuple[Path, dict[str, Path]]:
    """The series and its labels in four formats (paths relative to ``tmp_path``)."""
    study = Study()
    folder = write_series(pydicom, study, tmp_path / "series")
    labels = study_labels(study)
    nifti = tmp_path / "labels.nii.gz"
    nib.save(nib.Nifti1Image(np.transpose(labels, (2, 1, 0)), study.grid_affine()), str(nifti))
    nrrd = tmp_path / "labels.nrrd"
    sitk.WriteImage(itk_labels(sitk, study, labels), str(nrrd))
    seg_nrrd = tmp_path / "labels.seg.nrrd"
    cropped = slicer_metadata(
        itk_labels(sitk, study, labels[2:4], first=2), [("necrosis", 1, 0), ("oedema", 2, 0)]
    )
    sitk.WriteImage(cropped, str(seg_nrrd))
    seg = write_seg(pydicom, study, labels, tmp_path / "labels_seg.dcm")
    return folder, {"nifti": nifti, "nrrd": nrrd, "seg.nrrd": seg_nrrd, "dicom-seg": seg}


def _manifest(tmp_path: Path, name: str, mask: Path) -> Path:
    path = tmp_path / f"{name}.csv"
    path.write_text(f"path,label,mask,split\nseries,,{mask.name},test\n")
    return path


@pytest.mark.parametrize("values", [None, (2,), (1, 2)])
def test_every_label_format_labels_the_same_slices(tmp_path, values):
    masks = _label_files(tmp_path)[1]
    reading = Reading(label_values=values)
    found = {}
    for name, mask in masks.items():
        manifest = read_manifest(_manifest(tmp_path, name, mask), reading)
        rows = [(s.index, s.label, s.mask is not None) for _, s in manifest.rows]
        volumes = [(v.path.name, v.label) for v in manifest.volumes]
        pictures = [
            mask_input(s.mask, s.image, s.index, 64, reading).numpy()
            for _, s in manifest.rows
            if s.mask is not None
        ]
        found[name] = (rows, volumes, pictures)
    lesions = {None: {2, 3}, (2,): {3}, (1, 2): {2, 3}}[values]
    rows, volumes, pictures = found["nifti"]
    assert {i for i, label, _ in rows if label == 1} == lesions
    assert all(has_mask == (label == 1) for _, label, has_mask in rows)
    assert volumes == [("series", 1)] and len(pictures) == len(lesions)
    assert all(p.any() for p in pictures)
    for name in ("nrrd", "seg.nrrd", "dicom-seg"):
        assert found[name][:2] == (rows, volumes), name
        assert all(map(np.array_equal, found[name][2], pictures)), name


def test_label_values_from_the_command_line(tmp_path, capsys):
    """``--label_values`` reaches a run's reading; a bad value is one line naming it, before
    the checkpoint is even opened."""
    assert run_reading(RunConfig(label_values="4,1")).label_values == (1, 4)
    assert run_reading(RunConfig()).label_values is None
    image = tmp_path / "scan.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((4, 4, 3), np.float32), np.eye(4)), str(image))
    missing, out = tmp_path / "missing.pth", ["--out", str(tmp_path / "out")]
    for argv in (
        ["predict", "--ckpt_path", str(missing), str(image), *out, "--label_values", "0,1"],
        ["predict", "--ckpt_path", str(missing), str(image), *out, "--label_values=1,,4"],
        [
            "calibrate",
            "--ckpt_path",
            str(missing),
            "--normal",
            str(tmp_path),
            "--label_values",
            "x",
        ],
    ):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: --label_values ") and "\n" not in err, err
        assert "missing.pth" not in err
