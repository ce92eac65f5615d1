"""predict and calibrate through the CLI on the synthetic benchmark and real medical samples."""

from __future__ import annotations

import csv
import os
import shutil

import numpy as np
import pytest
from PIL import Image

from iqeclip.cli.main import main
from iqeclip.errors import UserError
from iqeclip.inference.predict import predict
from iqeclip.model.checkpoint import read_checkpoint
from iqeclip.model.detector import IQEClip
from tests.integration.conftest import MODEL, few_shot_eval_argv, output_argv, predict_argv
from tests.unit.data.readers.test_nifti import RAS_SHAPE, radiological_axial, stored_orientations


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_predict_images_folder_with_masks(bench, checkpoint, tmp_path, capsys):
    inputs = tmp_path / "in"
    shutil.copytree(bench / "Brain_AD" / "test" / "Ungood" / "img", inputs / "nested")
    big = Image.open(next((inputs / "nested").iterdir())).resize((100, 80))
    big.save(inputs / "wide image.png")
    out = tmp_path / "out"
    masks = tmp_path / "masks"  # every input needs its mask (of its size) with --masks
    shutil.copytree(bench / "Brain_AD" / "test" / "Ungood" / "anomaly_mask", masks)
    Image.new("L", (100, 80)).save(masks / "wide image.png")
    argv = predict_argv(checkpoint, inputs, out=out)
    assert main([*argv, "--masks", str(masks), "--batch_size", "3"]) == 0
    assert "no calibrated threshold" in capsys.readouterr().out
    rows = _rows(out / "predictions.csv")
    n_inputs = len(list((inputs / "nested").iterdir())) + 1
    assert len(rows) == n_inputs and all(r["decision"] == "" for r in rows)
    for r in rows:
        stem = os.path.splitext(os.path.basename(r["path"]))[0]
        source = Image.open(r["path"])
        overlay = Image.open(out / f"{stem}_overlay.png")
        assert overlay.size == source.size
        amap = np.load(out / f"{stem}_map.npy")
        assert amap.shape == (source.size[1], source.size[0]) and amap.dtype == np.float32
        assert Image.open(out / f"{stem}_map.png").mode == "L"
        assert float(r["score"]) > 0
    # the ground-truth contour is drawn in green on masked inputs
    first = rows[0]["path"]
    if os.path.basename(first) != "wide image.png":
        stem = os.path.splitext(os.path.basename(first))[0]
        pixels = np.asarray(Image.open(out / f"{stem}_overlay.png"))
        assert ((pixels == [0, 255, 0]).all(axis=-1)).any()
    assert main(["predict", "--ckpt_path", str(checkpoint), str(inputs), "--out", str(out)]) == 2


def test_calibrate_then_predict_uses_the_threshold(bench, checkpoint, tmp_path):
    ck = tmp_path / "c.pth"
    shutil.copy(checkpoint, ck)
    normal = bench / "Brain_AD" / "valid" / "good" / "img"
    assert (
        main(["calibrate", "--ckpt_path", str(ck), "--normal", str(normal), "--target_fpr", "0.25"])
        == 0
    )
    _, _, meta = read_checkpoint(ck)
    t = meta["thresholds"]
    assert (
        t["rule"] == "target_fpr"
        and t["target_fpr"] == 0.25
        and t["n_images"] == 16
        and t["pixel"] is None
    )
    out = tmp_path / "out"
    assert main(["predict", "--ckpt_path", str(ck), str(normal), "--out", str(out)]) == 0
    rows = _rows(out / "predictions.csv")
    flagged = sum(r["decision"] == "abnormal" for r in rows)
    assert flagged <= 0.25 * len(rows) and all(
        r["decision"] in ("normal", "abnormal") for r in rows
    )
    assert all(float(r["threshold"]) == pytest.approx(t["image"], abs=1e-6) for r in rows)
    assert "FPR <= 0.25" in rows[0]["rule"]
    assert (
        main(
            [
                "calibrate",
                "--ckpt_path",
                str(ck),
                "--data_path",
                str(bench),
                "--obj",
                "Brain",
                "--f1",
            ]
        )
        == 0
    )
    _, _, meta = read_checkpoint(ck)
    assert meta["thresholds"]["rule"] == "f1" and meta["thresholds"]["pixel"] is not None


def test_calibrate_needs_a_source(checkpoint, capsys):
    assert main(["calibrate", "--ckpt_path", str(checkpoint)]) == 2
    assert "--normal DIR, both --data_path and --obj, or --manifest" in capsys.readouterr().err


def test_test_command_writes_a_report(bench, checkpoint, tmp_path):
    run = tmp_path / "run"
    argv = few_shot_eval_argv(bench, checkpoint)
    assert main([*argv, "--report", str(run), "--log_path", str(tmp_path / "log")]) == 0
    rows = _rows(run / "scores.csv")
    assert len(rows) == 4 and {r["label"] for r in rows} == {"0", "1"}
    assert len(list((run / "examples").glob("*.npz"))) == 4
    html = (run / "report.html").read_text()
    assert "not the accuracy of pretrained CLIP" in html and html.count("<svg") >= 2
    assert (run / "report.md").is_file()
    (run / "report.html").unlink()
    assert main(["report", str(run)]) == 0
    assert (run / "report.html").is_file()


def test_predict_nifti_volume_keeps_the_affine(checkpoint, tmp_path):
    nib = pytest.importorskip("nibabel")
    affine = np.array([[0.9, 0, 0, -10], [0, 1.1, 0, 5], [0, 0, 2.5, 30], [0, 0, 0, 1]])
    data = np.random.default_rng(0).random((40, 32, 3)).astype(np.float32) * 1000
    nib.Nifti1Image(data, affine).to_filename(tmp_path / "vol.nii.gz")
    out = tmp_path / "out"
    argv = predict_argv(checkpoint, tmp_path / "vol.nii.gz", out=out)
    assert main([*argv, "--outputs", "overlay,npy"]) == 0  # a volume's slices: when named
    rows = _rows(out / "predictions.csv")
    assert [r["slice"] for r in rows] == ["0", "1", "2"]
    maps = nib.load(out / "vol_anomaly.nii.gz")
    np.testing.assert_allclose(maps.affine, affine)
    assert maps.shape == data.shape
    volume = maps.get_fdata()
    # the map of a slice is in the radiological view: back in the file, rows and columns are
    # flipped and swapped (x runs R, y A in this RAS file)
    np.testing.assert_allclose(
        volume[:, :, 1], np.load(out / "vol_s001_map.npy")[::-1, ::-1].T, atol=1e-6
    )
    assert Image.open(out / "vol_s002_overlay.png").size == (40, 32)  # rows: the 32 y voxels


def _map_is_the_input(self, images, setting):
    """A stand-in for IQEClip.predict whose anomaly map is the input's grey value."""
    maps = images.mean(dim=1)
    return maps, maps.amax(dim=(1, 2))


def test_predict_nifti_orientation_maps_overlay_the_source(checkpoint, tmp_path, monkeypatch):
    nib = pytest.importorskip("nibabel")
    monkeypatch.setattr(IQEClip, "predict", _map_is_the_input)  # maximum = the lesion
    files = stored_orientations(nib, tmp_path)
    out = tmp_path / "out"
    paths = [path for path, _ in files.values()]
    argv = [*predict_argv(checkpoint, *paths, out=out), "--window", "500,1000", "--outputs", "npy"]
    assert main(argv) == 0
    rows = _rows(out / "predictions.csv")
    assert [r["slice"] for r in rows] == ["0", "1", "2", "3"] * 3  # the files' axial slices
    canonical = {}
    for name, (path, lesion) in files.items():
        source = nib.load(path)
        maps = nib.load(out / f"{name}_anomaly.nii.gz")
        assert maps.shape == source.shape, name
        np.testing.assert_allclose(maps.affine, source.affine, atol=1e-5)
        assert int(maps.header["sform_code"]) == int(source.header["sform_code"])
        assert int(maps.header["qform_code"]) == int(source.header["qform_code"])
        volume = maps.get_fdata()
        assert np.unravel_index(np.argmax(volume), volume.shape) == lesion, name
        canonical[name] = nib.as_closest_canonical(maps).get_fdata()
        assert canonical[name].shape == RAS_SHAPE
        # The per-slice maps are the axial slices in the radiological view.
        np.testing.assert_allclose(
            radiological_axial(canonical[name], 1),
            np.load(out / f"{name}_s001_map.npy"),
            atol=1e-6,
        )
    for name in ("lps", "oblique"):
        np.testing.assert_allclose(canonical[name], canonical["ras"], atol=1e-6)


def test_predict_nifti_native_orientation_keeps_the_file_order(checkpoint, tmp_path, monkeypatch):
    nib = pytest.importorskip("nibabel")
    monkeypatch.setattr(IQEClip, "predict", _map_is_the_input)
    path, lesion = stored_orientations(nib, tmp_path)["lps"]
    out = tmp_path / "out"
    argv = [*predict_argv(checkpoint, path, out=out), "--outputs", "npy"]
    assert main([*argv, "--window", "500,1000", "--orientation", "native"]) == 0
    source = nib.load(path)
    maps = nib.load(out / "lps_anomaly.nii.gz")
    assert maps.shape == source.shape
    np.testing.assert_allclose(maps.affine, source.affine, atol=1e-5)
    volume = maps.get_fdata()
    assert np.unravel_index(np.argmax(volume), volume.shape) == lesion
    # Slices in the file's order: slice k of the map volume is lps_s<k>_map.npy.
    np.testing.assert_allclose(
        volume[:, :, lesion[2]], np.load(out / "lps_s001_map.npy"), atol=1e-6
    )
    with pytest.raises(SystemExit) as stop:  # not one of the choices
        main([*argv, "--overwrite", "--orientation", "sideways"])
    assert stop.value.code == 2
    with pytest.raises(UserError, match=r"^orientation must be one of radiological"):
        predict(checkpoint, [path], tmp_path / "api", orientation="LPS")


def test_predict_nifti_2d_image_writes_a_2d_map(checkpoint, tmp_path):
    nib = pytest.importorskip("nibabel")
    affine = np.diag([-0.8, -0.8, 1.0, 1.0])  # voxel axis 0 runs L, 1 P: rows are axis 1
    picture = np.random.default_rng(2).random((20, 24)).astype(np.float32)
    nib.Nifti1Image(picture, affine).to_filename(tmp_path / "flat.nii.gz")
    out = tmp_path / "out"
    assert main(predict_argv(checkpoint, tmp_path / "flat.nii.gz", out=out)) == 0
    maps = nib.load(out / "flat_anomaly.nii.gz")
    assert maps.shape == (20, 24)
    np.testing.assert_allclose(maps.affine, affine)
    np.testing.assert_allclose(maps.get_fdata(), np.load(out / "flat_map.npy").T, atol=1e-6)


def test_predict_nifti_orientation_gives_the_same_maps_with_the_model(checkpoint, tmp_path):
    nib = pytest.importorskip("nibabel")
    files = stored_orientations(nib, tmp_path)
    out = tmp_path / "out"
    assert main(predict_argv(checkpoint, files["ras"][0], files["lps"][0], out=out)) == 0
    rows = {(r["path"], r["slice"]): float(r["score"]) for r in _rows(out / "predictions.csv")}
    for k in range(4):  # the same pictures, so the same scores
        ras_score = rows[(str(files["ras"][0]), str(k))]
        assert rows[(str(files["lps"][0]), str(k))] == pytest.approx(ras_score, abs=1e-5)
    ras = nib.load(out / "ras_anomaly.nii.gz").get_fdata()
    lps = nib.load(out / "lps_anomaly.nii.gz")
    assert lps.shape == ras.shape
    np.testing.assert_allclose(lps.affine, nib.load(files["lps"][0]).affine, atol=1e-5)
    np.testing.assert_allclose(lps.get_fdata(), ras[::-1, ::-1, :], atol=1e-5)


def test_predict_dicom_file_and_series(checkpoint, tmp_path):
    pydicom = pytest.importorskip("pydicom")
    from pydicom.data import get_testdata_file

    ct = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    series = tmp_path / "series"
    series.mkdir()
    for i in (3, 1, 2):
        ct.InstanceNumber = i
        ct.ImagePositionPatient = [0.0, 0.0, 5.0 * i]  # one position per slice
        ct.save_as(series / f"slice{i}.dcm")
    out = tmp_path / "out"
    argv = predict_argv(checkpoint, series, get_testdata_file("MR_small.dcm"), out=out)
    assert main([*argv, "--window", "40,400"]) == 0
    rows = _rows(out / "predictions.csv")
    assert len(rows) == 4
    assert Image.open(out / "MR_small_overlay.png").size == (64, 64)


def test_train_few_on_your_own_folders(bench, tmp_path, capsys):
    valid = bench / "Liver_AD" / "valid"
    args = [
        "train-few",
        "--normal",
        str(valid / "good" / "img"),
        "--abnormal",
        str(valid / "Ungood" / "img"),
        "--masks",
        str(valid / "Ungood" / "anomaly_mask"),
        "--obj",
        "MyTask",
        *MODEL,
        "--epoch",
        "1",
        *output_argv(tmp_path),
        "--data_path",
        str(tmp_path),
    ]
    assert main(args) == 0
    log = (tmp_path / "log").read_text()
    assert "support: 16 abnormal + 16 normal -> 352 augmented samples" in log
    assert "no MyTask_AD/test split to evaluate on" in log
    _, _, meta = read_checkpoint(tmp_path / "MyTask_16.pth")
    assert meta["run"]["setting"] == "few"
    empty = tmp_path / "empty"
    empty.mkdir()
    capsys.readouterr()
    assert main([*args[:2], str(empty), *args[3:]]) == 2
    assert f"--normal {empty}: no images" in capsys.readouterr().err


def test_predict_on_a_bmad_test_folder_leaves_the_masks_out(bench, checkpoint, tmp_path, capsys):
    test = bench / "Brain_AD" / "test"
    masks = sorted((test / "Ungood" / "anomaly_mask").iterdir())
    images = sorted((test / "good" / "img").iterdir()) + sorted((test / "Ungood" / "img").iterdir())
    assert masks and images
    out = tmp_path / "out"
    assert main(predict_argv(checkpoint, test, out=out)) == 0
    rows = _rows(out / "predictions.csv")
    assert sorted(r["path"] for r in rows) == sorted(map(str, images))
    assert f"left out {len(masks)} ground-truth masks in anomaly_mask/" in capsys.readouterr().out
    given = tmp_path / "given"  # a mask folder given itself is what the user asked for
    assert main(predict_argv(checkpoint, test / "Ungood" / "anomaly_mask", out=given)) == 0
    assert len(_rows(given / "predictions.csv")) == len(masks)
