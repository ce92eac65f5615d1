"""predict and calibrate through the CLI on the synthetic benchmark and real medical samples."""

from __future__ import annotations

import csv
import os
import shutil

import numpy as np
import pytest
from PIL import Image

from iqeclip.cli.main import main
from iqeclip.model.checkpoint import read_checkpoint
from tests.integration.conftest import MODEL, few_shot_eval_argv, output_argv, predict_argv


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_predict_images_folder_with_masks(bench, checkpoint, tmp_path, capsys):
    inputs = tmp_path / "in"
    shutil.copytree(bench / "Brain_AD" / "test" / "Ungood" / "img", inputs / "nested")
    big = Image.open(next((inputs / "nested").iterdir())).resize((100, 80))
    big.save(inputs / "wide image.png")
    out = tmp_path / "out"
    masks = bench / "Brain_AD" / "test" / "Ungood" / "anomaly_mask"
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
    assert "--normal DIR or both --data_path and --obj" in capsys.readouterr().err


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
    assert main(predict_argv(checkpoint, tmp_path / "vol.nii.gz", out=out)) == 0
    rows = _rows(out / "predictions.csv")
    assert [r["slice"] for r in rows] == ["0", "1", "2"]
    maps = nib.load(out / "vol_anomaly.nii.gz")
    np.testing.assert_allclose(maps.affine, affine)
    assert maps.shape == data.shape
    volume = maps.get_fdata()
    np.testing.assert_allclose(volume[:, :, 1], np.load(out / "vol_s001_map.npy"), atol=1e-6)
    assert Image.open(out / "vol_s002_overlay.png").size == (32, 40)


def test_predict_dicom_file_and_series(checkpoint, tmp_path):
    pydicom = pytest.importorskip("pydicom")
    from pydicom.data import get_testdata_file

    ct = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    series = tmp_path / "series"
    series.mkdir()
    for i in (3, 1, 2):
        ct.InstanceNumber = i
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
