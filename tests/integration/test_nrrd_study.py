"""A 3D Slicer study end to end through the CLI: NRRD volumes (oblique, one stored at another
voxel order) with Slicer segmentations (``.seg.nrrd``, one at half the image's resolution, with
several label values) train 2-shot from a manifest, test with pixel metrics, calibrate, and
predict NRRD maps and masks that lie on their source's grid."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from iqeclip.cli.main import main
from iqeclip.model.checkpoint import read_checkpoint
from tests.integration.conftest import MODEL, output_argv, predict_argv

sitk = pytest.importorskip("SimpleITK")

SIZE = (36, 32, 6)  # x, y, z voxels
LESION_SLICES = (2, 3)
TUMOUR, OEDEMA = 2, 1  # label values of the segmentation (BraTS-like: only the tumour counts)


def _geometry(image) -> None:
    turn = np.radians(15.0)
    direction = np.array(
        [[np.cos(turn), -np.sin(turn), 0], [np.sin(turn), np.cos(turn), 0], [0, 0, 1]]
    )
    image.SetDirection(direction.ravel().tolist())
    image.SetSpacing((0.9, 0.8, 3.0))
    image.SetOrigin((-15.0, 20.0, 4.0))


def _case(
    folder: Path, name: str, lesion: bool, seed: int, coarse: bool = False
) -> tuple[str, str]:
    """A FLAIR-like NRRD volume and its Slicer segmentation: tumour (2) inside oedema (1)."""
    rng = np.random.default_rng(seed)
    voxels = rng.normal(300.0, 40.0, SIZE[::-1]).astype(np.float32)  # (z, y, x)
    labels = np.zeros(SIZE[::-1], np.uint8)
    if lesion:
        yy, xx = np.mgrid[: SIZE[1], : SIZE[0]]
        for k in LESION_SLICES:
            oedema = (yy - 16) ** 2 + (xx - 12) ** 2 < 64
            tumour = (yy - 16) ** 2 + (xx - 12) ** 2 < 25
            voxels[k][tumour] += 400.0
            labels[k][oedema] = OEDEMA
            labels[k][tumour] = TUMOUR
    image = sitk.GetImageFromArray(voxels)
    _geometry(image)
    segmentation = sitk.GetImageFromArray(labels)
    segmentation.CopyInformation(image)
    if coarse:  # stored at half the in-plane resolution, as some annotation tools do
        segmentation = sitk.Resample(
            segmentation,
            [SIZE[0] // 2, SIZE[1] // 2, SIZE[2]],
            sitk.Transform(),
            sitk.sitkNearestNeighbor,
            image.GetOrigin(),
            (1.8, 1.6, 3.0),
            image.GetDirection(),
        )
    for key, value in (("Segment0_Name", "tumour"), ("Segment0_LabelValue", str(TUMOUR))):
        segmentation.SetMetaData(key, value)
    sitk.WriteImage(image, str(folder / f"{name}.nrrd"), True)
    sitk.WriteImage(segmentation, str(folder / f"{name}.seg.nrrd"), True)
    return f"{name}.nrrd", f"{name}.seg.nrrd"


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_slicer_study_end_to_end(tmp_path: Path):
    scans = tmp_path / "scans"
    scans.mkdir()
    plan = [("p01", True, "train"), ("p02", True, "train"), ("p03", True, "valid")]
    plan += [("p04", False, "valid"), ("p05", True, "test"), ("p06", False, "test")]
    lines = ["path,label,mask,split"]
    for seed, (name, lesion, split) in enumerate(plan):
        image, labels = _case(scans, name, lesion, seed, coarse=name == "p05")
        lines.append(f"scans/{image},,scans/{labels},{split}")
    manifest = tmp_path / "study.csv"
    manifest.write_text("\n".join(lines) + "\n")
    out = tmp_path / "ck"
    common = ["--manifest", str(manifest), "--obj", "Study", "--data_path", str(tmp_path)]
    common += ["--label_values", str(TUMOUR)]

    train = ["train-few", *common, *MODEL, "--shot", "2", "--epoch", "1", "--batch_size", "8"]
    assert main([*train, "--percentile", "1,99", *output_argv(out)]) == 0
    ckpt = out / "Study_2.pth"

    metrics_json = tmp_path / "test.json"
    test = ["test-few", *common, "--shot", "2", "--ckpt_path", str(ckpt)]
    assert main([*test, "--metrics_json", str(metrics_json), "--log_path", str(out / "t")]) == 0
    metrics = json.loads(metrics_json.read_text())
    assert metrics["n_images"] == 2 * SIZE[2]  # p05 and p06, every slice
    assert 0.0 <= metrics["pixel_auroc"] <= 1.0

    calibrate = ["calibrate", "--ckpt_path", str(ckpt), "--manifest", str(manifest)]
    assert main([*calibrate, "--label_values", str(TUMOUR)]) == 0
    thresholds = read_checkpoint(ckpt)[2]["thresholds"]
    assert thresholds["pixel"] is not None and thresholds["volume"]["n_volumes"] == 2

    predicted = tmp_path / "pred"
    volume = scans / "p05.nrrd"
    assert main(predict_argv(ckpt, volume, out=predicted)) == 0
    source = sitk.ReadImage(str(volume))
    for name in ("p05_anomaly.nrrd", "p05_mask.nrrd"):
        written = sitk.ReadImage(str(predicted / name))
        assert written.GetSize() == source.GetSize(), name
        np.testing.assert_allclose(written.GetOrigin(), source.GetOrigin(), atol=1e-6)
        np.testing.assert_allclose(written.GetSpacing(), source.GetSpacing(), atol=1e-6)
        np.testing.assert_allclose(written.GetDirection(), source.GetDirection(), atol=1e-6)
    mask = sitk.GetArrayFromImage(sitk.ReadImage(str(predicted / "p05_mask.nrrd")))
    assert set(np.unique(mask)) <= {0, 1}
    rows = _rows(predicted / "predictions.csv")
    assert len(rows) == SIZE[2]
    assert rows[-1]["outputs"].split(";") == ["p05_anomaly.nrrd", "p05_mask.nrrd"]
    assert sorted(p.name for p in predicted.iterdir() if p.name.startswith("p05")) == [
        "p05_anomaly.nrrd",
        "p05_mask.nrrd",
    ]  # a volume's default: its volume files, no per-slice pictures
