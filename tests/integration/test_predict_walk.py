"""A folder walk takes every format a reader takes (NRRD and MetaImage among them, detached
headers with their voxel files) and never drops a file in silence: what is no input is listed in
``skipped_inputs.csv`` with its reason, whatever ``--on_bad_input`` says."""

from __future__ import annotations

import csv
import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from iqeclip.cli.main import main
from iqeclip.data.validate import Skipped
from iqeclip.inference.listing import expand_inputs
from tests.integration.conftest import predict_argv

sitk = pytest.importorskip("SimpleITK")


def _folder(root: Path) -> Path:
    """A folder as a Slicer user has it: scans in three formats, a segmentation, notes."""
    root.mkdir()
    rng = np.random.default_rng(0)
    volume = sitk.GetImageFromArray(rng.random((3, 32, 36)).astype(np.float32))
    volume.SetSpacing((0.8, 0.9, 3.0))
    sitk.WriteImage(volume, str(root / "ct.nrrd"))
    sitk.WriteImage(volume, str(root / "mr.mha"))
    sitk.WriteImage(volume, str(root / "detached.mhd"))  # writes detached.raw beside it
    sitk.WriteImage(sitk.Cast(volume > 0.9, sitk.sitkUInt8), str(root / "ct.seg.nrrd"))
    Image.fromarray(rng.integers(0, 255, (40, 40), dtype=np.uint8)).save(root / "photo.png")
    (root / "notes.txt").write_text("acquired on scanner 2\n")
    return root


def test_the_walk_takes_itk_files_and_lists_the_rest(tmp_path: Path, caplog):
    folder = _folder(tmp_path / "study")
    left_out: list[Skipped] = []
    with caplog.at_level(logging.WARNING):
        found = expand_inputs([folder], unsupported=left_out)
    assert sorted(p.name for p in found) == ["ct.nrrd", "detached.mhd", "mr.mha", "photo.png"]
    reasons = {s.path.name: s.reason for s in left_out}
    assert sorted(reasons) == ["ct.seg.nrrd", "notes.txt"]  # detached.raw is read via its header
    assert "segmentation" in reasons["ct.seg.nrrd"]
    assert "no reader for this file type" in reasons["notes.txt"]
    assert "left out 2 files" in caplog.text


@pytest.mark.parametrize("policy", ["error", "skip"])
def test_predict_lists_what_it_did_not_read(checkpoint, tmp_path: Path, policy: str):
    folder = _folder(tmp_path / "study")
    out = tmp_path / "out"
    assert main([*predict_argv(checkpoint, folder, out=out), "--on_bad_input", policy]) == 0
    with (out / "predictions.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    per_input = {}
    for row in rows:
        per_input[Path(row["path"]).name] = per_input.get(Path(row["path"]).name, 0) + 1
    assert per_input == {"ct.nrrd": 3, "detached.mhd": 3, "mr.mha": 3, "photo.png": 1}
    with (out / "skipped_inputs.csv").open(newline="") as f:
        skipped = {Path(r["path"]).name: r["reason"] for r in csv.DictReader(f)}
    assert sorted(skipped) == ["ct.seg.nrrd", "notes.txt"]


def test_a_second_run_into_the_walked_folder_lists_none_of_its_own_files(checkpoint, tmp_path):
    folder = _folder(tmp_path / "study")
    argv = predict_argv(checkpoint, folder, out=folder)
    assert main(argv) == 0
    assert (folder / "config.yaml").is_file() and (folder / "predictions.csv").is_file()
    assert main([*argv, "--overwrite"]) == 0
    with (folder / "skipped_inputs.csv").open(newline="") as f:
        skipped = sorted(Path(r["path"]).name for r in csv.DictReader(f))
    assert skipped == ["ct.seg.nrrd", "notes.txt"]  # not config.yaml, not the tables
