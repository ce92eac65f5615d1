"""Never a silent wrong decision: decisions on full-precision numbers, blank slices decide
nothing, a NaN is an error, label volumes are drawn, a shared series UID is split, the reading
in use is recorded, and an older checkpoint keeps its orientation rule with a warning."""

from __future__ import annotations

import csv
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from iqeclip.cli.main import main
from iqeclip.inference.inputs import checkpoint_reading
from iqeclip.model.checkpoint import update_checkpoint_meta
from iqeclip.model.detector import IQEClip
from tests.integration.conftest import calibrated, predict_argv
from tests.scans import Study

nib = pytest.importorskip("nibabel")
pydicom = pytest.importorskip("pydicom")

SCORE = 0.8844778537750244  # a float32 score; its six-decimal text 0.884478 is above THRESHOLD
THRESHOLD = float(np.nextafter(SCORE, 1.0))  # 0.8844778537750245: the score is below it


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def _fixed_score(score: float):
    def predict(self, images, setting):
        maps = images.mean(dim=1)
        return maps, torch.full((images.shape[0],), score, dtype=torch.float32)

    return predict


def test_decisions_use_full_precision(checkpoint, tmp_path, monkeypatch):
    monkeypatch.setattr(IQEClip, "predict", _fixed_score(SCORE))
    ckpt = calibrated(checkpoint, tmp_path, THRESHOLD)
    path = Study(slices=3).write_nifti(nib, tmp_path / "ct.nii.gz")
    out = tmp_path / "out"
    assert main(predict_argv(ckpt, path, out=out)) == 0
    rows = _rows(out / "predictions.csv")
    assert [float(r["score"]) for r in rows] == [SCORE] * 3  # the CSV reads back exactly
    assert {float(r["threshold"]) for r in rows} == {THRESHOLD}
    assert [r["decision"] for r in rows] == ["normal"] * 3
    (volume,) = _rows(out / "volumes.csv")
    assert float(volume["score"]) == SCORE and volume["decision"] == "normal"
    assert volume["abnormal_slices"] == ""
    # every decision can be recomputed from the CSV's own text
    for row in [*rows, volume]:
        recomputed = "abnormal" if float(row["score"]) >= float(row["threshold"]) else "normal"
        assert row["decision"] == recomputed
    assert f"{SCORE:.6f}" == "0.884478" and float("0.884478") >= THRESHOLD  # what rounding did


def _blank_first_predict(self, images, setting):
    """A stand-in model that scores constant pictures highest, as the issue's FLAIR did."""
    maps = images.mean(dim=1)
    spread = maps.amax(dim=(1, 2)) - maps.amin(dim=(1, 2))
    return maps, 5.0 - spread


def test_blank_slices_get_no_decision_and_decide_no_volume(checkpoint, tmp_path, monkeypatch):
    monkeypatch.setattr(IQEClip, "predict", _blank_first_predict)
    scan = Study(slices=5)
    scan.hu[0] = -1024  # air: a skull-stripped volume's empty end slices
    scan.hu[4] = -1024
    path = scan.write_nifti(nib, tmp_path / "flair.nii.gz")
    ckpt = calibrated(checkpoint, tmp_path, 4.5)  # a blank slice (5.0) would be abnormal
    out = tmp_path / "out"
    assert main(predict_argv(ckpt, path, out=out)) == 0
    rows = {int(r["slice"]): r for r in _rows(out / "predictions.csv")}
    for k in (0, 4):
        assert rows[k]["decision"] == "blank" and rows[k]["score"] == "", k
        assert rows[k]["outputs"] in ("", "flair_anomaly.nii.gz"), k  # no per-slice files
    scored = [float(rows[k]["score"]) for k in (1, 2, 3)]
    assert all(s < 4.5 for s in scored)
    (volume,) = _rows(out / "volumes.csv")
    assert volume["n_blank"] == "2" and volume["n_slices"] == "5"
    assert float(volume["score"]) == max(scored) and volume["decision"] == "normal"
    assert volume["abnormal_slices"] == ""
    maps = np.asarray(nib.load(str(out / "flair_anomaly.nii.gz")).dataobj)
    assert not maps[:, :, 0].any() and not maps[:, :, 4].any() and maps[:, :, 2].any()
    # calibration on normal images leaves the blank slices out of the threshold too
    normal = tmp_path / "normal"
    normal.mkdir()
    shutil.copy(path, normal / "flair.nii.gz")
    assert main(["calibrate", "--ckpt_path", str(ckpt), "--normal", str(normal)]) == 0
    stored = IQEClip.from_checkpoint(ckpt, torch.device("cpu")).meta["thresholds"]
    assert stored["n_images"] == 3 and stored["image"] < 4.5  # the blank slices scored 5.0


def _nan_for_bright(self, images, setting):
    maps = images.mean(dim=1)
    scores = maps.amax(dim=(1, 2))
    return maps, torch.where(scores > 0.99, torch.nan, scores)


def test_a_nan_score_is_an_error_never_a_decision(checkpoint, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(IQEClip, "predict", _nan_for_bright)
    folder = tmp_path / "in"
    folder.mkdir()
    white = np.full((20, 20), 255, np.uint8)
    white[0, 0] = 254  # not blank: a constant picture would get no score at all
    Image.fromarray(white).save(folder / "white.png")
    Image.fromarray(np.arange(400, dtype=np.uint8).reshape(20, 20) // 2).save(folder / "ok.png")
    ckpt = calibrated(checkpoint, tmp_path, 0.5)
    out = tmp_path / "out"
    assert main(predict_argv(ckpt, folder, out=out)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "white.png" in err[0] and "non-finite" in err[0]
    assert not (out / "predictions.csv").exists()
    skip = ["--on_bad_input", "skip", "--overwrite"]  # the failed run left its record
    assert main([*predict_argv(ckpt, folder, out=out), *skip]) == 0
    rows = _rows(out / "predictions.csv")
    assert [Path(r["path"]).name for r in rows] == ["ok.png"]
    assert [Path(r["path"]).name for r in _rows(out / "skipped_inputs.csv")] == ["white.png"]


def _lesion_labels(scan: Study) -> np.ndarray:
    """The two lesions as a label volume on the study's (column, row, slice) grid."""
    labels = np.transpose(scan.hu >= 700, (2, 1, 0)).astype(np.uint8)
    assert labels.sum() == 4 * 10 + 9 * 4
    return labels


def _green(path: Path) -> np.ndarray:
    return (np.asarray(Image.open(path).convert("RGB")) == [0, 255, 0]).all(axis=-1)


def _boundary(mask: np.ndarray) -> np.ndarray:
    inner = mask.copy()
    inner[1:, :] &= mask[:-1, :]
    inner[:-1, :] &= mask[1:, :]
    inner[:, 1:] &= mask[:, :-1]
    inner[:, :-1] &= mask[:, 1:]
    return mask & ~inner


def test_masks_draw_label_volumes_on_volumes_and_series(checkpoint, tmp_path, capsys):
    scan = Study()
    volume = scan.write_nifti(nib, tmp_path / "ct.nii.gz")
    series = scan.write_dicom(pydicom, tmp_path / "series")
    masks = tmp_path / "masks"
    masks.mkdir()
    labels = nib.Nifti1Image(_lesion_labels(scan), scan.grid_affine())
    lps = nib.orientations.ornt_transform(
        nib.orientations.io_orientation(labels.affine), nib.orientations.axcodes2ornt("LPS")
    )
    nib.save(labels.as_reoriented(lps), str(masks / "ct.nii.gz"))  # stored in another order
    nib.save(labels, str(masks / "series.nii.gz"))
    out = tmp_path / "out"
    argv = [*predict_argv(checkpoint, volume, series, out=out), "--masks", str(masks)]
    assert main(argv) == 0
    for stem in ("ct", "series"):
        for k in range(scan.slices):  # the lesions' outlines, in the pixels a viewer shows
            want = _boundary(scan.hu[k] >= 700)
            got = _green(out / f"{stem}_s{k:03d}_overlay.png")
            assert np.array_equal(got, want), (stem, k)
    (masks / "series.nii.gz").unlink()
    capsys.readouterr()
    assert main([*argv, "--overwrite"]) == 2
    assert "no mask series.nii.gz in --masks" in capsys.readouterr().err
    frames = tmp_path / "frames.tif"
    pages = [Image.fromarray(np.full((8, 8), v, np.uint8)) for v in (10, 200)]
    pages[0].save(frames, save_all=True, append_images=pages[1:])
    assert (
        main([*predict_argv(checkpoint, frames, out=tmp_path / "o2"), "--masks", str(masks)]) == 2
    )
    assert "multi-frame or multi-page file" in capsys.readouterr().err


def test_two_patients_sharing_a_series_uid_are_two_volumes(checkpoint, tmp_path, caplog):
    folder = tmp_path / "anonymised"
    Study(patient="A", seed=1).write_dicom(pydicom, folder, prefix="a")
    Study(patient="B", seed=2).write_dicom(pydicom, folder, prefix="b")  # same UIDs, positions
    out = tmp_path / "out"
    assert main(predict_argv(checkpoint, folder, out=out)) == 0
    volumes = _rows(out / "volumes.csv")
    assert len(volumes) == 2 and [v["n_slices"] for v in volumes] == ["6", "6"]
    rows = _rows(out / "predictions.csv")
    for volume, prefix in zip(volumes, "ab", strict=True):
        mine = [r for r in rows if r["path"] == volume["path"]]
        assert {Path(r["source"]).name[0] for r in mine} == {prefix}  # never interleaved
    assert "differ in PatientID" in caplog.text


def test_config_records_the_reading_in_use(checkpoint, tmp_path, capsys):
    ckpt = tmp_path / "pct.pth"
    shutil.copy(checkpoint, ckpt)
    update_checkpoint_meta(
        ckpt, lambda meta: {"run": {**meta["run"], "percentile": "1,99", "window": None}}
    )
    path = Study(slices=2).write_nifti(nib, tmp_path / "mr.nii.gz")
    out = tmp_path / "out"
    assert main(predict_argv(ckpt, path, out=out)) == 0
    recorded = yaml.safe_load((out / "config.yaml").read_text())["predict"]
    assert recorded["percentile"] == "1,99" and recorded["window"] is None
    assert recorded["orientation"] == "radiological" and recorded["axis"] == 2
    assert capsys.readouterr().out.count("reading: --percentile 1,99") == 1


def test_an_older_checkpoint_keeps_its_orientation_with_a_warning(caplog):
    for run in ({}, {"orientation": "canonical"}):
        caplog.clear()
        reading = checkpoint_reading({"run": run}, None, None)
        assert reading.orientation == "canonical"
        assert "older orientation rule" in caplog.text
    caplog.clear()
    assert checkpoint_reading({"run": {"orientation": "radiological"}}, None, None).orientation == (
        "radiological"
    )
    assert "older orientation rule" not in caplog.text


def test_an_undecodable_dicom_is_one_line(checkpoint, tmp_path):
    """pydicom logs every decoder plugin's traceback before raising: we report once. Run as a
    user runs it (a process of its own, pydicom's loggers reaching the console)."""
    from pydicom.data import get_testdata_file
    from pydicom.encaps import encapsulate

    ds = pydicom.dcmread(get_testdata_file("MR_small_jp2klossless.dcm"))
    ds.PixelData = encapsulate([b"\xff\x4f\xff\x51" + b"\x00" * 200])  # a J2K header, cut
    ds.save_as(tmp_path / "cut.dcm")
    argv = predict_argv(checkpoint, tmp_path / "cut.dcm", out=tmp_path / "out")
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            ROOT_LOGGING + "from iqeclip.cli.main import main; "
            "raise SystemExit(main(sys.argv[1:]))",
            *argv,
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2
    err = done.stderr.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("error: ") and "cut.dcm: cannot decode pixel data" in err[0]


ROOT_LOGGING = "import logging, sys; logging.basicConfig(); "
"""A host application (a notebook, a pipeline) with the root logger set up, as is common."""


def _calibrate_on_volumes(
    checkpoint: Path, folder: Path, *options: str, blank_in_n1: bool = False
) -> dict:
    """``calibrate --manifest`` on three valid volumes (n1, n2 normal, a1 abnormal); n1's first
    slice blank on request. Returns the stored volume threshold record."""
    for name, seed in (("n1", 1), ("n2", 2), ("a1", 3)):
        scan = Study(slices=4, seed=seed)
        if blank_in_n1 and name == "n1":
            scan.hu[0] = -1024
        scan.write_nifti(nib, folder / f"{name}.nii.gz")
    manifest = folder / "m.csv"
    manifest.write_text(
        "path,label,split\nn1.nii.gz,normal,valid\nn2.nii.gz,normal,valid\na1.nii.gz,abnormal,valid\n"
    )
    ckpt = folder / "c.pth"
    shutil.copy(checkpoint, ckpt)
    argv = ["calibrate", "--ckpt_path", str(ckpt), "--manifest", str(manifest), *options]
    assert main(argv) == 0
    return IQEClip.from_checkpoint(ckpt, torch.device("cpu")).meta["thresholds"]["volume"]


def test_volume_calibration_warns_with_too_few_normal_volumes(checkpoint, tmp_path, caplog):
    volume = _calibrate_on_volumes(checkpoint, tmp_path)
    assert "2 normal calibration volumes cannot resolve --target_fpr 0.05" in caplog.text
    assert volume["n_volumes"] == 3


def test_two_acquisitions_under_one_set_of_uids_are_refused(checkpoint, tmp_path, capsys):
    """Same patient, same UIDs, same positions (a scan repeated, echoes, time points): no
    grouping field tells them apart, so the folder is refused rather than interleaved."""
    folder = tmp_path / "repeated"
    Study(seed=1).write_dicom(pydicom, folder, prefix="a")
    Study(seed=2).write_dicom(pydicom, folder, prefix="b")
    assert main(predict_argv(checkpoint, folder, out=tmp_path / "out")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "lie at the same position" in err[0] and "repeated" in err[0]


def test_planes_and_non_images_of_one_folder(checkpoint, tmp_path, caplog):
    """A localizer's second plane under the same UIDs is a volume of its own; an RT dose grid
    in the folder is left out and counted, not scored."""
    from pydicom.data import get_testdata_file

    folder = tmp_path / "study"
    Study(slices=4).write_dicom(pydicom, folder, prefix="ax")
    Study(slices=4, tilt=(20.0, 80.0)).write_dicom(pydicom, folder, prefix="co")
    shutil.copy(get_testdata_file("rtdose.dcm"), folder / "dose.dcm")
    out = tmp_path / "out"
    assert main(predict_argv(checkpoint, folder, out=out)) == 0
    volumes = _rows(out / "volumes.csv")
    assert [v["n_slices"] for v in volumes] == ["4", "4"]
    rows = _rows(out / "predictions.csv")
    assert not any(Path(r["source"]).name == "dose.dcm" for r in rows) and len(rows) == 8
    for volume in volumes:
        names = {Path(r["source"]).name[:2] for r in rows if r["path"] == volume["path"]}
        assert len(names) == 1  # each volume holds one plane's files
    assert "differ in ImageOrientationPatient" in caplog.text
    assert "left out 1 files that are not images: dose.dcm (its SOP class is RT Dose" in caplog.text


def test_blank_slices_enter_no_volume_threshold(checkpoint, tmp_path, monkeypatch):
    monkeypatch.setattr(IQEClip, "predict", _blank_first_predict)
    volume = _calibrate_on_volumes(checkpoint, tmp_path, "--target_fpr", "0", blank_in_n1=True)
    assert volume["threshold"] < 5.0  # the blank slice of n1 scored 5.0 and was left out
