"""What predict writes per slice: ``--outputs``, and binary masks from a calibrated pixel threshold."""

from __future__ import annotations

import csv
import shutil

import numpy as np
import pytest
from PIL import Image

from iqeclip.cli.main import main
from iqeclip.model.checkpoint import read_checkpoint
from tests.integration.conftest import predict_argv


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _calibrated(bench, checkpoint, tmp_path):
    ck = tmp_path / "ck.pth"
    shutil.copy(checkpoint, ck)
    calibrate = ["calibrate", "--ckpt_path", str(ck), "--data_path", str(bench), "--obj", "Brain"]
    assert main([*calibrate, "--f1"]) == 0
    return ck, read_checkpoint(ck)[2]["thresholds"]


def test_a_pixel_threshold_gives_a_mask_per_slice(bench, checkpoint, tmp_path):
    ck, thresholds = _calibrated(bench, checkpoint, tmp_path)
    pixel = thresholds["pixel"]
    images = bench / "Brain_AD" / "test" / "Ungood" / "img"
    out = tmp_path / "out"
    assert main(predict_argv(ck, images, out=out)) == 0
    maps = sorted(out.glob("*_map.npy"))
    assert maps and len(maps) == len(list(images.iterdir()))
    for npy in maps:
        mask = np.asarray(Image.open(npy.with_name(npy.name.replace("_map.npy", "_mask.png"))))
        assert set(np.unique(mask)) <= {0, 255}
        assert np.array_equal(mask == 255, np.load(npy) >= pixel)


def test_outputs_choose_the_files(bench, checkpoint, tmp_path, capsys):
    images = bench / "Brain_AD" / "test" / "good" / "img"
    only = tmp_path / "only"
    assert main([*predict_argv(checkpoint, images, out=only), "--outputs", "overlay"]) == 0
    fixed = {"predictions.csv", "config.yaml", ".predict.lock"}
    written = {p.name.split("_")[-1] for p in only.iterdir()} - fixed
    assert written == {"overlay.png"}
    default = tmp_path / "default"
    assert main(predict_argv(checkpoint, images, out=default)) == 0
    kinds = {p.name.split("_")[-1] for p in default.iterdir() if p.suffix in (".png", ".npy")}
    assert kinds == {"overlay.png", "map.png", "map.npy"}  # no pixel threshold: no masks


def test_bad_outputs_are_refused_before_any_file(checkpoint, bench, tmp_path, capsys):
    images = bench / "Brain_AD" / "test" / "good" / "img"
    for outputs, message in [
        ("heat", "--outputs 'heat': choose from overlay, map, npy, mask"),
        ("mask", "--outputs mask needs a pixel threshold in the checkpoint"),
    ]:
        out = tmp_path / outputs
        assert main([*predict_argv(checkpoint, images, out=out), "--outputs", outputs]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: {message}") and err.count("\n") == 1
        assert not out.exists() or not any(out.iterdir())


def test_volumes_get_a_mask_volume_and_a_row_of_volumes_csv(bench, checkpoint, tmp_path):
    nib = pytest.importorskip("nibabel")
    ck, thresholds = _calibrated(bench, checkpoint, tmp_path)
    affine = np.diag([0.8, 0.8, 3.0, 1.0])
    data = np.random.default_rng(1).random((48, 40, 4)).astype(np.float32) * 900
    nib.Nifti1Image(data, affine).to_filename(tmp_path / "vol.nii.gz")
    out = tmp_path / "out"
    assert main(predict_argv(ck, tmp_path / "vol.nii.gz", out=out)) == 0

    maps, mask = nib.load(out / "vol_anomaly.nii.gz"), nib.load(out / "vol_mask.nii.gz")
    np.testing.assert_allclose(mask.affine, affine)
    assert mask.get_data_dtype() == np.uint8 and mask.shape == data.shape
    assert np.array_equal(np.asarray(mask.dataobj) == 1, maps.get_fdata() >= thresholds["pixel"])

    slices = _rows(out / "predictions.csv")
    (volume,) = _rows(out / "volumes.csv")
    scores = [float(r["score"]) for r in slices]
    assert volume["path"] == str(tmp_path / "vol.nii.gz") and volume["n_slices"] == "4"
    assert float(volume["score"]) == pytest.approx(max(scores), abs=1e-6)
    assert volume["decision"] == ("abnormal" if max(scores) >= thresholds["image"] else "normal")
    flagged = [r["slice"] for r in slices if r["decision"] == "abnormal"]
    assert volume["abnormal_slices"] == ";".join(flagged)

    top2 = tmp_path / "top2"
    assert (
        main([*predict_argv(ck, tmp_path / "vol.nii.gz", out=top2), "--volume_score", "topk:2"])
        == 0
    )
    (volume,) = _rows(top2 / "volumes.csv")
    assert float(volume["score"]) == pytest.approx(np.mean(sorted(scores)[-2:]), abs=1e-6)


def test_images_alone_write_no_volumes_csv_and_bad_volume_scores_are_refused(
    bench, checkpoint, tmp_path, capsys
):
    images = bench / "Brain_AD" / "test" / "good" / "img"
    out = tmp_path / "out"
    assert main(predict_argv(checkpoint, images, out=out)) == 0
    assert not (out / "volumes.csv").exists()
    capsys.readouterr()
    bad = tmp_path / "bad"
    assert main([*predict_argv(checkpoint, images, out=bad), "--volume_score", "top3"]) == 2
    assert capsys.readouterr().err.startswith("error: --volume_score 'top3': use max or topk:K")
    assert not bad.exists()
