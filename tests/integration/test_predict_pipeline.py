"""predict's pipeline: inputs read by DataLoader workers, files written by writer threads. The
results are the same files and rows as reading and writing in one thread, a bad input still
stops the run with one line, and an interrupted write never marks its input as done."""

from __future__ import annotations

import csv
import re

import numpy as np
import pytest
from PIL import Image

from iqeclip.cli.main import main
from iqeclip.errors import UserError
from iqeclip.inference import predict as predict_module
from iqeclip.inference.outputs import Partial
from tests.integration.conftest import failing_writes, predict_argv
from tests.unit.data.readers.test_registry import truncated_ct, write_two_series


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _inputs(root):
    """PNGs of two sizes, a 16-bit PNG, an EXIF-rotated JPEG, a NIfTI volume stored in LPS
    order (reoriented on reading) and a two-series DICOM folder."""
    nib = pytest.importorskip("nibabel")
    pydicom = pytest.importorskip("pydicom")
    rng = np.random.default_rng(0)
    (root / "png").mkdir(parents=True)
    for i in range(5):
        size = (48, 40) if i % 2 else (64, 64)
        Image.fromarray((rng.random(size) * 255).astype(np.uint8)).save(root / "png" / f"{i}.png")
    Image.fromarray((rng.random((32, 32)) * 65535).astype(np.uint16)).save(root / "deep.png")
    photo = Image.fromarray((rng.random((24, 40)) * 255).astype(np.uint8)).convert("RGB")
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees to display
    photo.save(root / "phone.jpg", exif=exif)
    volume = rng.random((30, 28, 4)).astype(np.float32)
    lps = np.diag([-0.8, -0.8, 3.0, 1.0])  # the first two axes run against RAS+
    nib.Nifti1Image(volume, lps).to_filename(root / "vol.nii.gz")
    write_two_series(pydicom, root / "dicom")
    return [
        root / "png",
        root / "deep.png",
        root / "phone.jpg",
        root / "vol.nii.gz",
        root / "dicom",
    ]


def _outputs(out):
    """Every file predict wrote, by name: arrays for maps, pixels for pictures, bytes else."""
    nib = pytest.importorskip("nibabel")
    found = {}
    for path in sorted(out.iterdir()):
        if path.suffix == ".npy":
            found[path.name] = np.load(path)
        elif path.suffix == ".png":
            found[path.name] = np.asarray(Image.open(path))
        elif path.name.endswith(".nii.gz"):
            found[path.name] = np.asarray(nib.load(path).dataobj)
        else:
            found[path.name] = path.read_bytes()
    return found


def test_workers_and_writer_threads_give_the_same_results(checkpoint, tmp_path):
    inputs = _inputs(tmp_path / "in")
    runs = {}
    for workers in (0, 2):
        out = tmp_path / f"out{workers}"
        argv = [*predict_argv(checkpoint, *inputs, out=out), "--batch_size", "3"]
        argv += ["--outputs", "overlay,map,npy"]  # the slices of volumes too
        assert main([*argv, "--workers", str(workers)]) == 0
        runs[workers] = _outputs(out)
    assert runs[0].keys() == runs[2].keys()
    assert len([n for n in runs[0] if n.endswith("_overlay.png")]) == 5 + 1 + 1 + 4 + 6
    assert runs[0]["phone_overlay.png"].shape[:2] == (40, 24)  # as displayed: EXIF applied
    for name, value in runs[0].items():
        if name == "config.yaml":  # records --workers
            continue
        if isinstance(value, np.ndarray):
            np.testing.assert_array_equal(runs[2][name], value, err_msg=name)
        else:
            assert runs[2][name] == value, name


def test_a_bad_input_read_by_a_worker_is_one_line(checkpoint, tmp_path, capsys):
    pydicom = pytest.importorskip("pydicom")
    folder = tmp_path / "in"
    write_two_series(pydicom, folder / "dicom")
    (folder / "loose").mkdir()
    broken = truncated_ct(pydicom, folder / "loose" / "broken.dcm")
    out = tmp_path / "out"
    argv = [*predict_argv(checkpoint, folder, out=out), "--workers", "2"]
    with pytest.MonkeyPatch.context() as patch:  # past the up-front check: found while reading
        patch.setattr(predict_module, "check_inputs", lambda paths, *a: (paths, []))
        assert main(argv) == 2
    errors = re.findall(r"(?:Traceback|error: ).*", capsys.readouterr().err)
    assert len(errors) == 1 and errors[0].startswith("error: ") and str(broken) in errors[0]
    assert main([*argv, "--on_bad_input", "skip"]) == 0
    assert str(broken) in [r["path"] for r in _rows(out / "skipped_inputs.csv")]


def test_a_failed_write_leaves_its_input_to_resume(checkpoint, tmp_path, monkeypatch):
    inputs = tmp_path / "in"
    inputs.mkdir()
    rng = np.random.default_rng(1)
    for i in range(6):
        Image.fromarray((rng.random((40, 40)) * 255).astype(np.uint8)).save(inputs / f"{i}.png")
    fresh = tmp_path / "fresh"
    assert main(predict_argv(checkpoint, inputs, out=fresh)) == 0
    out = tmp_path / "out"
    with failing_writes("3_"), pytest.raises(UserError, match=r"3_map\.npy"):
        predict_module.predict(
            checkpoint, [inputs], out, detector=_loaded(checkpoint), batch_size=2
        )
    done = {r["_input"] for r in Partial(out, predict_module.CSV_COLUMNS).load()}
    assert done == {str(inputs / f"{i}.png") for i in (0, 1, 2)}  # before the failed one
    assert all((out / f"{i}_map.npy").is_file() for i in (0, 1, 2))
    resume = [*predict_argv(checkpoint, inputs, out=out), "--resume"]
    assert main([*resume, "--batch_size", "3"]) == 2  # other batches: refused
    assert main([*resume, "--batch_size", "2"]) == 0
    assert [r["path"] for r in _rows(out / "predictions.csv")] == [
        r["path"] for r in _rows(fresh / "predictions.csv")
    ]
    assert _outputs(out).keys() == _outputs(fresh).keys()


def _loaded(checkpoint):
    from iqeclip.model.detector import IQEClip
    from iqeclip.runtime.device import resolve_device

    return IQEClip.from_checkpoint(checkpoint, resolve_device("cpu"))
