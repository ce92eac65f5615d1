"""Interruption and determinism: SIGKILL mid-epoch, resume, identical weights."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from iqeclip.cli.main import main
from tests.integration.conftest import predict_argv, train_few_argv


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

    Image.new("L", (40, 30), 128).save(inputs / "good scan ä.png")
    out = tmp_path / "out"
    assert main(["predict", "--ckpt_path", str(checkpoint), str(inputs), "--out", str(out)]) == 2
    assert "notes.png" in capsys.readouterr().err
    assert main([*predict_argv(checkpoint, inputs, out=out), "--on_bad_input", "skip"]) == 0
    assert "notes.png" in (out / "skipped_inputs.csv").read_text()
    assert (out / "good scan ä_overlay.png").is_file()
