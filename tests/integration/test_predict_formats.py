"""Volumes come back in their own format: predict writes an NRRD's maps and mask as NRRD and a
MetaImage's as MetaImage, with the source's origin, spacing and direction, so that the map's
maximum lies on the lesion in the world (ITK's LPS); by default a volume gets only its volume
files and rows, per-slice files only when ``--outputs`` names them."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from iqeclip.cli.main import main
from iqeclip.model.detector import IQEClip
from tests.integration.conftest import calibrated, predict_argv
from tests.scans import rotation

sitk = pytest.importorskip("SimpleITK")

PIXEL = 0.5  # the pixel threshold of the calibrated checkpoint
WINDOW = "500,1000"  # background [0, 100) -> 0, the lesion (1000) -> 1


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def _map_is_the_input(self, images, setting):
    """A stand-in for IQEClip.predict whose anomaly map is the input's grey value."""
    maps = images.mean(dim=1)
    return maps, maps.amax(dim=(1, 2))


# voxel axes (x, y, z) of each file: its size, spacing, LPS direction (columns), the lesion voxel
VOLUMES = {
    # axial, tilted 20 degrees about S and 10 about L-R
    "tilted.nrrd": (
        (12, 10, 4),
        (0.9, 1.1, 2.5),
        rotation(0, 10) @ rotation(2, 20),
        (8, 2, 1),
    ),
    # stored S first (voxel axis 0 runs inferior to superior), then L, then P, turned 12 degrees
    "sagittal_first.mha": (
        (4, 12, 10),
        (2.5, 0.9, 1.1),
        rotation(2, 12) @ np.array([[0.0, 1, 0], [0, 0, 1], [1, 0, 0]]),
        (1, 8, 2),
    ),
}
ORIGIN = np.array([10.0, -5.0, 30.0])  # LPS mm


def lesion_world(name: str) -> np.ndarray:
    """Where the lesion voxel of ``name`` lies, LPS mm, from the definition (ITK's rule:
    origin + direction @ (spacing * index))."""
    _, spacing, direction, lesion = VOLUMES[name]
    return ORIGIN + direction @ (np.array(spacing) * np.array(lesion))


def write_volume(folder: Path, name: str) -> Path:
    """A volume of background in [0, 100) with one lesion voxel of 1000 (a neighbour 600)."""
    size, spacing, direction, lesion = VOLUMES[name]
    voxels = np.random.default_rng(1).random(size).astype(np.float32) * 100
    voxels[lesion] = 1000.0
    voxels[lesion[0], lesion[1], (lesion[2] + 1) % size[2]] = 600.0
    image = sitk.GetImageFromArray(np.ascontiguousarray(voxels.transpose(2, 1, 0)))
    image.SetSpacing(spacing)
    image.SetOrigin(ORIGIN.tolist())
    image.SetDirection(direction.ravel().tolist())
    path = folder / name
    sitk.WriteImage(image, str(path))
    return path


@pytest.mark.parametrize("name", list(VOLUMES))
def test_maps_and_masks_come_back_in_the_inputs_format_and_world(
    name, checkpoint, tmp_path, monkeypatch
):
    monkeypatch.setattr(IQEClip, "predict", _map_is_the_input)  # maximum = the lesion
    source = write_volume(tmp_path, name)
    stem, fmt = source.name.split(".")
    ckpt = calibrated(checkpoint, tmp_path, pixel=PIXEL)
    out = tmp_path / "out"
    assert main([*predict_argv(ckpt, source, out=out), "--window", WINDOW]) == 0

    names = {p.name for p in out.iterdir() if not p.name.startswith(".")}
    volume_files = {f"{stem}_anomaly.{fmt}", f"{stem}_mask.{fmt}"}
    assert names == {"predictions.csv", "volumes.csv", "config.yaml", *volume_files}
    rows = _rows(out / "predictions.csv")
    assert [r["outputs"] for r in rows[:-1]] == [""] * (len(rows) - 1)  # no per-slice files
    assert set(rows[-1]["outputs"].split(";")) == volume_files

    theirs = sitk.ReadImage(str(source))
    maps = sitk.ReadImage(str(out / f"{stem}_anomaly.{fmt}"))
    assert maps.GetSize() == theirs.GetSize()
    assert maps.GetPixelID() == sitk.sitkFloat32
    np.testing.assert_allclose(maps.GetOrigin(), theirs.GetOrigin(), atol=1e-6)
    np.testing.assert_allclose(maps.GetSpacing(), theirs.GetSpacing(), atol=1e-6)
    np.testing.assert_allclose(maps.GetDirection(), theirs.GetDirection(), atol=1e-6)
    array = sitk.GetArrayFromImage(maps)  # (z, y, x)
    peak = np.unravel_index(np.argmax(array), array.shape)[::-1]
    world = maps.TransformIndexToPhysicalPoint([int(i) for i in peak])
    np.testing.assert_allclose(world, lesion_world(name), atol=1e-4)

    mask = sitk.ReadImage(str(out / f"{stem}_mask.{fmt}"))
    assert mask.GetPixelID() == sitk.sitkUInt8
    np.testing.assert_allclose(mask.GetDirection(), theirs.GetDirection(), atol=1e-6)
    bits = sitk.GetArrayFromImage(mask)
    assert np.array_equal(bits == 1, array >= PIXEL) and bits[tuple(peak[::-1])] == 1


def test_per_slice_files_of_a_volume_only_when_named(checkpoint, tmp_path):
    folder = tmp_path / "scans"
    folder.mkdir()
    source = write_volume(folder, "tilted.nrrd")
    argv = [*predict_argv(checkpoint, source, out=folder), "--outputs", "npy"]
    assert main(argv) == 0
    rows = _rows(folder / "predictions.csv")
    assert [r["slice"] for r in rows] == ["0", "1", "2", "3"]
    for r in rows:
        assert r["outputs"].split(";")[0] == f"tilted_s{int(r['slice']):03d}_map.npy"
        assert (folder / f"tilted_s{int(r['slice']):03d}_map.npy").is_file()
    assert rows[-1]["outputs"].endswith(";tilted_anomaly.nrrd")  # not calibrated: no mask
    assert not list(folder.glob("*.png"))
    # the folder again, into itself: the NRRD map written there is never read back as an input
    assert main([*predict_argv(checkpoint, folder, out=folder), "--overwrite"]) == 0
    rows = _rows(folder / "predictions.csv")
    assert {r["path"] for r in rows} == {str(source)} and len(rows) == 4
    assert [r["outputs"] for r in rows[:-1]] == ["", "", ""]  # the default: volume files only
    assert not list(folder.glob("*.npy"))  # the earlier run's, removed by --overwrite
