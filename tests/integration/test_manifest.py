"""Medical data end to end through the CLI: a BraTS-style manifest of NIfTI volumes trains 2-shot,
tests with pixel metrics, calibrates image, pixel and volume thresholds and predicts masks and
volumes.csv; and one 16-bit PNG, DICOM and NIfTI slice reach the model identically through
test-few, calibrate and predict."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from iqeclip.cli.main import main
from iqeclip.data.readers import load_image
from iqeclip.model.checkpoint import read_checkpoint
from iqeclip.model.detector import IQEClip
from tests.integration.conftest import MODEL, output_argv, predict_argv

SHAPE = (40, 40, 6)
LESION_SLICES = (2, 3)


def _case(nib: Any, folder: Path, name: str, lesion: bool, seed: int) -> tuple[str, str]:
    """A flair volume (stored LPS) and its seg label volume (stored RAS), as in BraTS."""
    rng = np.random.default_rng(seed)
    data = rng.normal(300.0, 40.0, SHAPE).astype(np.float32)
    labels = np.zeros(SHAPE, np.uint8)
    if lesion:
        yy, xx = np.mgrid[: SHAPE[0], : SHAPE[1]]
        disc = (yy - 20) ** 2 + (xx - 14) ** 2 < 36
        for k in LESION_SLICES:
            data[..., k][disc] += 400.0
            labels[..., k][disc] = 1
    affine = np.diag([1.0, 1.0, 3.0, 1.0])
    lps = nib.orientations.ornt_transform(
        nib.orientations.io_orientation(affine), nib.orientations.axcodes2ornt(("L", "P", "S"))
    )
    nib.save(nib.Nifti1Image(data, affine).as_reoriented(lps), str(folder / f"{name}_flair.nii.gz"))
    nib.save(nib.Nifti1Image(labels, affine), str(folder / f"{name}_seg.nii.gz"))
    return f"{name}_flair.nii.gz", f"{name}_seg.nii.gz"


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_brats_style_manifest_end_to_end(tmp_path, capsys):
    nib = pytest.importorskip("nibabel")
    scans = tmp_path / "scans"
    scans.mkdir()
    plan = [("p01", True, "train"), ("p02", True, "train"), ("p03", True, "valid")]
    plan += [("p04", False, "valid"), ("p05", True, "test"), ("p06", False, "test")]
    lines = ["path,label,mask,split"]
    for seed, (name, lesion, split) in enumerate(plan):
        flair, seg = _case(nib, scans, name, lesion, seed)
        lines.append(f"scans/{flair},,scans/{seg},{split}")
    manifest = tmp_path / "brats.csv"
    manifest.write_text("\n".join(lines) + "\n")
    out = tmp_path / "ck"
    common = ["--manifest", str(manifest), "--obj", "Study", "--data_path", str(tmp_path)]

    train = ["train-few", *common, *MODEL, "--shot", "2", "--epoch", "1", "--batch_size", "8"]
    assert main([*train, "--percentile", "1,99", *output_argv(out)]) == 0
    ckpt = out / "Study_2.pth"
    assert read_checkpoint(ckpt)[2]["run"]["percentile"] == "1,99"  # the rule is recorded

    metrics_json = tmp_path / "test.json"
    test = ["test-few", *common, "--shot", "2", "--ckpt_path", str(ckpt)]
    assert main([*test, "--metrics_json", str(metrics_json), "--log_path", str(out / "t")]) == 0
    metrics = json.loads(metrics_json.read_text())
    assert metrics["n_images"] == 2 * SHAPE[2]  # p05 and p06, every slice (margin 0)
    assert 0.0 <= metrics["pixel_auroc"] <= 1.0 and 0.0 <= metrics["image_auroc"] <= 1.0

    assert main(["calibrate", "--ckpt_path", str(ckpt), "--manifest", str(manifest)]) == 0
    thresholds = read_checkpoint(ckpt)[2]["thresholds"]
    assert thresholds["n_images"] == 2 * SHAPE[2] and thresholds["pixel"] is not None
    assert thresholds["volume"]["n_volumes"] == 2 and thresholds["volume"]["score"] == "max"
    capsys.readouterr()

    predicted = tmp_path / "pred"
    volume = scans / "p05_flair.nii.gz"
    assert main([*predict_argv(ckpt, volume, out=predicted), "--outputs", "mask"]) == 0
    assert "intensity rule" not in capsys.readouterr().err  # the recorded rule, no warning
    source = nib.load(str(volume))
    written = nib.load(str(predicted / "p05_flair_mask.nii.gz"))
    assert written.shape == source.shape and np.allclose(written.affine, source.affine)
    assert set(np.unique(np.asarray(written.dataobj))) <= {0, 1}
    rows = _rows(predicted / "predictions.csv")
    assert len(rows) == SHAPE[2]
    assert [r["outputs"] for r in rows[:-1]] == [f"p05_flair_s{k:03d}_mask.png" for k in range(5)]
    assert rows[-1]["outputs"].split(";") == [
        "p05_flair_s005_mask.png",
        "p05_flair_anomaly.nii.gz",
        "p05_flair_mask.nii.gz",
    ]
    (row,) = _rows(predicted / "volumes.csv")
    score = max(float(r["score"]) for r in rows)
    assert float(row["score"]) == pytest.approx(score, abs=1e-6)
    assert float(row["threshold"]) == pytest.approx(thresholds["volume"]["threshold"], abs=1e-6)
    assert row["decision"] == ("abnormal" if score >= float(row["threshold"]) else "normal")

    again = [*predict_argv(ckpt, volume, out=tmp_path / "p2"), "--window", "300,200"]
    assert main(again) == 0
    assert (
        "intensity rule --window 300,200 overrides the checkpoint's --percentile 1,99"
        in capsys.readouterr().err
    )
    assert main([*again[:-2], "--volume_score", "topk:2", "--overwrite"]) == 2
    assert "calibrated for --volume_score max" in capsys.readouterr().err
    assert main([*again[:-2], "--axis", "1", "--overwrite"]) == 0
    assert "slicing axis --axis 1 overrides the checkpoint's --axis 2" in capsys.readouterr().err

    lesions_only = tmp_path / "lesions.csv"  # as in BraTS: every valid volume has a lesion
    lesions_only.write_text("\n".join([lines[0], lines[3]]) + "\n")  # p03 only
    assert main(["calibrate", "--ckpt_path", str(ckpt), "--manifest", str(lesions_only)]) == 0
    assert (
        "no volume threshold: the 1 valid volumes hold no normal volume" in capsys.readouterr().out
    )
    assert read_checkpoint(ckpt)[2]["thresholds"]["volume"] is None


def test_one_slice_one_model_input_in_every_command(checkpoint, tmp_path, monkeypatch):
    """A 16-bit PNG, a DICOM (pydicom's CT_small) and a NIfTI slice, through test-few, calibrate
    and predict: the same model input tensors and the same scores in all three."""
    pydicom = pytest.importorskip("pydicom")
    nib = pytest.importorskip("nibabel")
    ckpt = tmp_path / "ck.pth"
    shutil.copy(checkpoint, ckpt)
    rng = np.random.default_rng(3)
    png = tmp_path / "wide.png"
    Image.fromarray(rng.integers(0, 4096, (48, 40), dtype=np.uint16)).save(png)
    dcm = tmp_path / "ct.dcm"
    shutil.copy(pydicom.data.get_testdata_file("CT_small.dcm"), dcm)
    volume = tmp_path / "vol.nii.gz"
    data = rng.normal(0.0, 1.0, (36, 44, 3)).astype(np.float32)
    nib.save(nib.Nifti1Image(data, np.diag([-1.0, 1.0, 2.0, 1.0])), str(volume))
    manifest = tmp_path / "m.csv"
    manifest.write_text(
        "path,label,mask,slice\nwide.png,normal,,\nct.dcm,abnormal,,\nvol.nii.gz,normal,,1\n"
    )
    seen: list[tuple[torch.Tensor, float]] = []
    features, predict_features = IQEClip.features, IQEClip.predict_features

    def record_input(self, images):
        seen.append((images.detach().cpu().clone(), None))
        return features(self, images)

    def record_score(self, *args):
        maps, scores = predict_features(self, *args)
        image, _ = seen.pop()
        seen.append((image, float(scores[0])))
        return maps, scores

    monkeypatch.setattr(IQEClip, "features", record_input)
    monkeypatch.setattr(IQEClip, "predict_features", record_score)
    runs = {}
    for name, argv in {
        "test-few": [
            "test-few",
            "--manifest",
            str(manifest),
            "--ckpt_path",
            str(ckpt),
            "--shot",
            "2",
            "--no_cache",
            "--log_path",
            str(tmp_path / "log"),
        ],
        "calibrate": ["calibrate", "--ckpt_path", str(ckpt), "--manifest", str(manifest)],
        "predict": predict_argv(ckpt, png, dcm, volume, out=tmp_path / "out"),
    }.items():
        seen.clear()
        assert main([*argv, "--batch_size", "1"]) == 0
        runs[name] = list(seen)
    assert len(runs["test-few"]) == len(runs["calibrate"]) == 3
    assert len(runs["predict"]) == 5  # the png, the dcm and the three NIfTI slices
    predicted = [runs["predict"][i] for i in (0, 1, 3)]  # ... of which slice 1
    for other in (runs["calibrate"], predicted):
        for (a, score_a), (b, score_b) in zip(runs["test-few"], other, strict=True):
            assert torch.equal(a, b) and score_a == score_b
    # the 16-bit PNG is the BMAD pre-processing (full 16-bit range), bit for bit
    assert torch.equal(runs["test-few"][0][0][0], load_image(png, 64).float() / 255)


def test_manifest_is_an_extra_zero_shot_source(bench, tmp_path):
    nib = pytest.importorskip("nibabel")
    flair, seg = _case(nib, tmp_path, "p01", lesion=True, seed=0)
    manifest = tmp_path / "m.csv"
    manifest.write_text(f"path,label,mask,split\n{flair},,{seg},train\n")
    out = tmp_path / "ck"
    argv = ["train-zero", "--data_path", str(bench), *MODEL, "--epoch", "1", "--select", "last"]
    assert main([*argv, "--manifest", str(manifest), "--no_cache", *output_argv(out)]) == 0
    log = (out / "log").read_text()
    assert f"manifest ({SHAPE[2]})" in log  # every slice of the volume joined the sources
    assert "Liver (4)" in log  # beside the BMAD datasets


def test_a_manifest_with_every_row_twice_is_refused_before_training(tmp_path, capsys):
    for name in ("a.png", "b.png"):
        Image.fromarray(np.full((16, 16), 70, np.uint8)).save(tmp_path / name)
    manifest = tmp_path / "twice.csv"
    manifest.write_text("path,label,split\n" + "a.png,normal,train\nb.png,abnormal,\n" * 2)
    out = tmp_path / "ck"
    argv = [
        "train-few",
        "--manifest",
        str(manifest),
        "--obj",
        "Study",
        "--data_path",
        str(tmp_path),
    ]
    argv += [*MODEL, "--shot", "1", "--epoch", "1", "--on_bad_input", "skip", *output_argv(out)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"error: --manifest {manifest} line 4: a.png duplicates line 2\n" in err
    assert not list(out.glob("*.pth"))
