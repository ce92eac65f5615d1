"""The contract between commands (issue 13): a test names the protocol that produced its numbers,
predict checks its inputs before the first batch, outputs are checked before any work, no user file
is overwritten, and calibrations are kept."""

from __future__ import annotations

import json

from iqeclip.cli.main import main
from tests.integration.conftest import few_shot_eval_argv


def _error(argv: list[str], capsys) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: "), err
    return err


def test_test_runs_the_checkpoints_protocol(bench, checkpoint, tmp_path, capsys):
    argv = few_shot_eval_argv(bench, checkpoint)  # --shot 2, as trained
    log = ["--log_path", str(tmp_path / "log")]
    err = _error([*argv[:-4], "--shot", "4", "--ckpt_path", str(checkpoint), *log], capsys)
    assert "--shot 4:" in err and "was trained 2-shot" in err
    no_shot = ["test-few", "--data_path", str(bench), "--ckpt_path", str(checkpoint), *log]
    metrics = tmp_path / "m.json"
    assert main([*no_shot, "--metrics_json", str(metrics)]) == 0
    assert json.loads(metrics.read_text())["shot"] == 2  # the checkpoint's
    capsys.readouterr()
    err = _error(["test-zero", *no_shot[1:]], capsys)
    assert "was trained few-shot (2-shot): test it with test-few, not test-zero" in err


def test_numeric_bounds_checked_before_any_work(bench, tmp_path, capsys):
    import pytest

    from iqeclip.config import RunConfig
    from iqeclip.errors import UserError
    from tests.integration.conftest import output_argv, train_few_argv

    out = tmp_path / "ck"
    for flags, message in (
        (["--batch_size", "0"], "--batch_size must be at least 1, got 0"),
        (["--batch_size", "-3"], "--batch_size must be at least 1, got -3"),
        (["--learning_rate", "-1"], "--learning_rate must be greater than 0, got -1.0"),
        (["--epoch", "0"], "--epochs must be at least 1, got 0"),
        (["--dropout", "1"], "--dropout must be in [0, 1), got 1.0"),
        (["--margin", "-1"], "--margin must be at least 0, got -1"),
    ):
        err = _error([*train_few_argv(bench, 1), *flags, *output_argv(out)], capsys)
        assert message in err, (flags, err)
    assert not out.exists()  # no checkpoint, not even the folder or the log
    err = _error(
        ["calibrate", "--ckpt_path", "x.pth", "--normal", ".", "--target_fpr", "1"], capsys
    )
    assert "--target_fpr must be in [0, 1), got 1.0" in err
    with pytest.raises(UserError, match=r"^save_every must be at least 1"):
        RunConfig(save_every=0)  # the Python API checks the same bounds, naming the parameter


def _rows(path):
    import csv

    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _bad_inputs(bench, tmp_path):
    """Four good scans and one problem of each kind, with a --masks folder."""
    import shutil

    import numpy as np
    from PIL import Image

    folder, masks = tmp_path / "in", tmp_path / "masks"
    folder.mkdir()
    masks.mkdir()
    source = bench / "Brain_AD" / "test" / "Ungood"
    originals = sorted((source / "img").iterdir())
    names = [f"scan{k}.png" for k in range(6)]
    for k, name in enumerate(names):
        shutil.copy(originals[k % len(originals)], folder / name)
        shutil.copy(source / "anomaly_mask" / originals[k % len(originals)].name, masks / name)
    size = Image.open(folder / names[0]).size
    Image.new("L", (1, 1)).save(folder / "tiny.png")
    Image.new("1", (9000, 9000)).save(folder / "huge.png")  # 81 Mpx, a small file
    for name in ("tiny.png", "huge.png"):
        shutil.copy(masks / names[0], masks / name)
    Image.new("L", (size[0] + 3, size[1])).save(masks / names[1])  # wrong size
    grey = (np.arange(size[0] * size[1]) % 3 * 100).astype(np.uint8).reshape(size[::-1])
    Image.fromarray(grey).save(masks / names[2])  # not binary: 0, 100, 200
    (masks / names[3]).unlink()  # missing
    return folder, masks, names


def test_predict_validates_every_input_before_the_first_batch(bench, checkpoint, tmp_path, capsys):
    from tests.integration.conftest import predict_argv

    folder, masks, names = _bad_inputs(bench, tmp_path)
    out = tmp_path / "out"
    argv = [*predict_argv(checkpoint, folder, out=out), "--masks", str(masks)]
    _error(argv, capsys)
    assert not out.exists()  # error mode: nothing written at all
    assert main([*argv, "--on_bad_input", "skip"]) == 0
    reasons = {r["path"].rsplit("/", 1)[1]: r["reason"] for r in _rows(out / "skipped_inputs.csv")}
    assert "image is 1x1 pixels" in reasons["tiny.png"]
    assert "larger than the 50-megapixel limit" in reasons["huge.png"]
    assert f"is {_size(folder / names[1], 3)}" in reasons[names[1]]
    assert "grey values" in reasons[names[2]] or "binary" in reasons[names[2]]
    assert "no mask" in reasons[names[3]]
    scored = {r["path"].rsplit("/", 1)[1] for r in _rows(out / "predictions.csv")}
    assert scored == set(names) - set(names[1:4])


def _size(path, extra):
    from PIL import Image

    w, h = Image.open(path).size
    return f"{w + extra}x{h} pixels but its image"


def test_predict_keeps_rows_of_finished_inputs_and_resumes(bench, checkpoint, tmp_path, capsys):
    import numpy as np
    import pytest

    from iqeclip.inference import writers as module
    from tests.integration.conftest import predict_argv

    nib = pytest.importorskip("nibabel")
    folder = tmp_path / "in"
    folder.mkdir()
    for k, src in enumerate(sorted((bench / "Brain_AD" / "test" / "good" / "img").iterdir())):
        (folder / f"{k}.png").write_bytes(src.read_bytes())
    flat = folder / "z_flat.nii.gz"  # a 2-D NIfTI among them
    nib.save(
        nib.Nifti1Image(np.random.default_rng(0).random((30, 20), np.float32), np.eye(4)), flat
    )
    whole = tmp_path / "whole"
    assert main(predict_argv(checkpoint, folder, out=whole)) == 0
    assert nib.load(str(whole / "z_flat_anomaly.nii.gz")).shape == (30, 20)

    out = tmp_path / "out"
    write = module.Writer.add
    calls = []

    def dies_on_the_third(self, item, amap, score):
        calls.append(item.name)
        if len(calls) == 3:
            raise KeyboardInterrupt  # a kill mid-run
        return write(self, item, amap, score)

    module.Writer.add = dies_on_the_third
    try:
        assert main(predict_argv(checkpoint, folder, out=out)) == 130
    finally:
        module.Writer.add = write
    assert not (out / "predictions.csv").exists()
    kept = _rows(next(out.glob(".predictions.partial.*.csv")))
    assert [r["path"] or r["_group"] for r in kept] == [  # each input's rows, then its marker
        str(folder / "0.png"),
        "done",
        str(folder / "1.png"),
        "done",
    ]
    capsys.readouterr()
    assert "--resume to continue" in _error(predict_argv(checkpoint, folder, out=out), capsys)
    err = _error(
        [*predict_argv(checkpoint, folder, out=out), "--resume", "--outputs", "npy"], capsys
    )
    assert "the interrupted run in" in err and "had other options" in err
    assert main([*predict_argv(checkpoint, folder, out=out), "--resume"]) == 0
    assert "2 inputs were scored before" in capsys.readouterr().out
    assert _rows(out / "predictions.csv") == _rows(whole / "predictions.csv")  # same scores
    assert not list(out.glob(".predictions.partial.*"))


def test_predict_never_overwrites_a_users_file(bench, checkpoint, tmp_path, capsys):
    import shutil

    from tests.integration.conftest import predict_argv

    uf = tmp_path / "uf"
    uf.mkdir()
    scan = next((bench / "Brain_AD" / "test" / "good" / "img").iterdir())
    shutil.copy(scan, uf / "scan.png")
    (uf / "scan_map.png").write_bytes(b"the user's own file")
    err = _error(predict_argv(checkpoint, uf / "scan.png", out=uf), capsys)
    assert "already holds scan_map.png" in err
    err = _error([*predict_argv(checkpoint, uf / "scan.png", out=uf), "--overwrite"], capsys)
    assert "no earlier predict run in it listed it" in err  # --overwrite is not a licence
    assert (uf / "scan_map.png").read_bytes() == b"the user's own file"

    (uf / "scan_map.png").unlink()
    for _ in range(2):  # --out is the input folder: the earlier outputs are not inputs
        assert main([*predict_argv(checkpoint, uf, out=uf), "--overwrite"]) == 0
        assert [r["path"] for r in _rows(uf / "predictions.csv")] == [str(uf / "scan.png")]
    capsys.readouterr()
    for p in uf.iterdir():
        if p.name != "scan.png":
            p.unlink()
    out = uf / "out"  # --out inside the input folder
    assert main(predict_argv(checkpoint, uf, out=out)) == 0
    (out / "notes.txt").write_text("mine")
    first = {p.name for p in out.iterdir()}
    assert main(predict_argv(checkpoint, uf, out=out)) == 2  # guarded
    capsys.readouterr()
    assert main([*predict_argv(checkpoint, uf, out=out), "--overwrite", "--outputs", "npy"]) == 0
    rows = _rows(out / "predictions.csv")
    assert [r["path"] for r in rows] == [str(uf / "scan.png")]  # not the earlier outputs
    assert {p.name for p in out.iterdir()} == {
        "notes.txt",
        "config.yaml",
        "predictions.csv",
        "scan_map.npy",
        ".predict.lock",  # locked by a run, left in place
    }
    assert "scan_overlay.png" in first and (out / "notes.txt").read_text() == "mine"


def test_output_locations_checked_before_any_work(bench, checkpoint, tmp_path, capsys):
    from tests.integration.conftest import predict_argv, train_few_argv

    a_file = tmp_path / "file"
    a_file.write_text("x")
    log = ["--log_path", str(tmp_path / "log")]
    err = _error([*train_few_argv(bench, 1), "--save_dir", str(a_file), *log], capsys)
    assert f"--save_dir {a_file}: " in err and "is a file" in err
    err = _error([*train_few_argv(bench, 1), "--log_path", str(a_file / "x.log")], capsys)
    assert "--log_path" in err
    err = _error([*train_few_argv(bench, 1), "--save_dir", "/proc/sys/iqeclip", *log], capsys)
    assert "cannot write in /proc/sys" in err
    assert not (tmp_path / "log").exists()  # stopped before the log was opened
    err = _error(predict_argv(checkpoint, a_file, out=a_file), capsys)
    assert f"--out {a_file}: " in err


def test_a_full_disk_is_one_line_and_leaves_no_partial_file(bench, checkpoint, tmp_path, capsys):
    import errno

    import numpy as np

    from tests.integration.conftest import predict_argv

    scan = next((bench / "Brain_AD" / "test" / "good" / "img").iterdir())
    out = tmp_path / "out"
    save = np.save

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    np.save = full
    try:
        assert main(predict_argv(checkpoint, scan, out=out)) == 2
    finally:
        np.save = save
    err = capsys.readouterr().err.splitlines()[-1]  # after the progress bar
    assert "_map.npy: No space left on device" in err and err.startswith("error: cannot write")
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]


def test_outputs_follow_the_umask(tmp_path):
    import os

    from iqeclip.runtime.files import atomic_write_text

    for mask, mode in ((0o022, 0o644), (0o077, 0o600), (0o002, 0o664)):
        old = os.umask(mask)
        try:
            atomic_write_text(tmp_path / f"{mask}.txt", "x")
        finally:
            os.umask(old)
        assert (tmp_path / f"{mask}.txt").stat().st_mode & 0o777 == mode


def test_calibrations_are_kept_and_doubtful_ones_warned(bench, checkpoint, tmp_path, capsys):
    import shutil

    from iqeclip.model.checkpoint import read_checkpoint

    ckpt = tmp_path / "c.pth"
    shutil.copy(checkpoint, ckpt)
    normal = bench / "Brain_AD" / "valid" / "good" / "img"
    assert main(["calibrate", "--ckpt_path", str(ckpt), "--normal", str(normal)]) == 0
    err = capsys.readouterr().err
    assert "16 normal calibration images cannot resolve --target_fpr 0.05" in err
    assert "2 of the 16 calibration images are in the checkpoint's training support set" in err
    first = read_checkpoint(ckpt)[2]["thresholds"]
    argv = ["calibrate", "--ckpt_path", str(ckpt), "--data_path", str(bench), "--obj", "Brain"]
    assert main([*argv, "--f1"]) == 0
    meta = read_checkpoint(ckpt)[2]
    assert meta["calibration_history"] == [first] and meta["thresholds"]["rule"] == "f1"
    assert "kept in the checkpoint's calibration_history (1 entries)" in capsys.readouterr().out


def test_a_cut_off_partial_row_scores_its_input_again(tmp_path):
    from iqeclip.inference.outputs import Partial
    from iqeclip.inference.predict import CSV_COLUMNS

    partial = Partial(tmp_path, CSV_COLUMNS)
    row = {c: "x" for c in CSV_COLUMNS} | {"slice": "", "_input": "a.png", "_group": 0}
    partial.append("a.png", [row])
    partial.append("vol.nii.gz", [row | {"_input": "vol.nii.gz", "slice": 0}])
    text = partial.path.read_text()
    partial.path.write_text(text[: text.rindex("done")])  # killed inside the marker line
    assert [r["_input"] for r in partial.load()] == ["a.png"]
    partial.path.write_text(text[: text.rindex("\n", 0, len(text) - 1) + 1])  # marker lost
    assert [r["_input"] for r in partial.load()] == ["a.png"]
