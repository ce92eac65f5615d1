"""Interruption and determinism: SIGKILL mid-epoch, resume, identical weights; a predict run
resumed after a kill writes the same files as one never interrupted."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file

from iqeclip.cli.main import main
from iqeclip.errors import UserError
from iqeclip.inference import predict as predict_module
from iqeclip.inference.outputs import Partial
from tests.integration.conftest import failing_writes, predict_argv, train_few_argv
from tests.integration.test_predict_pipeline import _loaded


def _args(bench, out):
    return [
        *train_few_argv(bench, 6),
        "--batch_size",
        "8",
        "--save_every",
        "1",
        "--no_cache",
        "--dropout",
        "0.1",
        "--lr",
        "1e-3",
        "--save_dir",
        str(out),
        "--log_path",
        str(out / "log"),
        "--metrics_json",
        str(out / "m.json"),
    ]


def _position(state):
    try:
        with safe_open(str(state), framework="pt") as f:
            meta = json.loads(f.metadata()["meta"])
    except Exception:  # being replaced at this moment, or not there yet
        return None
    return meta["epoch"], meta["step"]


def test_sigkill_mid_epoch_then_resume_gives_identical_weights(bench, tmp_path):
    straight, killed, again = tmp_path / "straight", tmp_path / "killed", tmp_path / "again"
    assert main(_args(bench, straight)) == 0
    assert main(_args(bench, again)) == 0  # same seed, same everything

    proc = subprocess.Popen(
        [sys.executable, "-m", "iqeclip", *_args(bench, killed)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    state = killed / "Brain_2.resume"
    deadline = time.monotonic() + 300
    position = None
    while time.monotonic() < deadline and proc.poll() is None:
        position = _position(state)
        if position is not None and position[0] >= 1 and position[1] >= 2:
            break
        time.sleep(0.02)
    if proc.poll() is not None:
        pytest.fail("the run finished before it could be killed mid-epoch")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert state.is_file() and not (killed / "m.json").exists()
    assert main([*_args(bench, killed), "--resume"]) == 0
    assert "resumed from" in (killed / "log").read_text()
    assert not state.exists()

    reference = load_file(straight / "Brain_2.pth")
    for other in (again, killed):
        weights = load_file(other / "Brain_2.pth")
        assert weights.keys() == reference.keys()
        for key, value in reference.items():
            assert torch.equal(weights[key], value), (other.name, key)
        assert json.loads((other / "m.json").read_text()) == json.loads(
            (straight / "m.json").read_text()
        )


def test_resume_errors(bench, tmp_path, capsys):
    assert main([*_args(bench, tmp_path), "--resume"]) == 2
    assert "--resume: no training state" in capsys.readouterr().err


def test_bad_input_error_stops_before_training_and_skip_lists_it(bench, tmp_path, capsys):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(bench / "Brain_AD", data / "Brain_AD")
    shutil.copytree(bench / "fewshot_seed", data / "fewshot_seed")
    broken = data / "Brain_AD" / "test" / "good" / "img" / "00001.png"
    broken.write_bytes(broken.read_bytes()[:40])  # truncated PNG
    (data / "Brain_AD" / "test" / "Ungood" / "anomaly_mask" / "00000.png").unlink()  # a lost mask
    args = [
        *train_few_argv(data, 1),
        "--save_dir",
        str(tmp_path / "ck"),
        "--log_path",
        str(tmp_path / "log"),
    ]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "00000.png" in err
    assert not (tmp_path / "ck").exists()  # stopped before any training
    assert main([*args, "--on_bad_input", "skip"]) == 0
    listed = (tmp_path / "ck" / "Brain_2_skipped.csv").read_text()
    assert "00001.png" in listed and "00000.png" in listed and listed.count("\n") == 3
    assert "skipped 2 unusable input files" in (tmp_path / "log").read_text()


def test_predict_skips_unreadable_files(checkpoint, tmp_path, capsys):
    inputs = tmp_path / "in"
    inputs.mkdir()
    (inputs / "notes.png").write_text("not an image")
    from PIL import Image

    good = Image.linear_gradient("L").resize((40, 30))  # not constant: a blank gets no overlay
    good.save(inputs / "good scan ä.png")
    out = tmp_path / "out"
    assert main(["predict", "--ckpt_path", str(checkpoint), str(inputs), "--out", str(out)]) == 2
    assert "notes.png" in capsys.readouterr().err
    assert main([*predict_argv(checkpoint, inputs, out=out), "--on_bad_input", "skip"]) == 0
    assert "notes.png" in (out / "skipped_inputs.csv").read_text()
    assert (out / "good scan ä_overlay.png").is_file()


def _scans(root):
    """PNGs of several sizes around a 4-slice NIfTI volume: 9 items, so batches of 3 cut
    through the volume."""
    nib = pytest.importorskip("nibabel")
    root.mkdir()
    rng = np.random.default_rng(3)
    for name, size in (("a", (48, 40)), ("b", (64, 64)), ("d", (40, 56)), ("e", (64, 64))):
        Image.fromarray((rng.random(size) * 255).astype(np.uint8)).save(root / f"{name}.png")
    Image.fromarray((rng.random((32, 48)) * 255).astype(np.uint8)).save(root / "f.png")
    volume = rng.random((30, 28, 4)).astype(np.float32)
    nib.Nifti1Image(volume, np.diag([0.8, 0.8, 3.0, 1.0])).to_filename(root / "c.nii.gz")
    return [root / n for n in ("a.png", "b.png", "c.nii.gz", "d.png", "e.png", "f.png")]


def _files(out):
    return {p.name: p.read_bytes() for p in sorted(out.iterdir())}


@pytest.mark.parametrize("cut", ["b", "c", "d", "f"])
def test_predict_resumed_after_a_kill_equals_an_uninterrupted_run_byte_for_byte(
    checkpoint, tmp_path, monkeypatch, cut
):
    scans = _scans(tmp_path / "in")
    detector = _loaded(checkpoint)
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    # the volume's slices write their files too: a write of each input can fail
    run = {"batch_size": 3, "detector": detector, "outputs": "overlay,map,npy"}
    predict_module.predict(checkpoint, [tmp_path / "in"], straight, **run)
    with failing_writes(f"{cut}_"), pytest.raises(UserError, match="No space left"):
        predict_module.predict(checkpoint, [tmp_path / "in"], resumed, **run)
    done = {r["_input"] for r in Partial(resumed, predict_module.CSV_COLUMNS).load()}
    before = [str(p) for p in scans[: [p.name[0] for p in scans].index(cut)]]
    assert done == set(before)
    predict_module.predict(checkpoint, [tmp_path / "in"], resumed, **run, resume=True)
    reference, files = _files(straight), _files(resumed)
    assert files.keys() == reference.keys()
    assert {"predictions.csv", "volumes.csv", "c_s003_map.npy", "f_map.png"} <= files.keys()
    for name, data in reference.items():
        assert files[name] == data, name
