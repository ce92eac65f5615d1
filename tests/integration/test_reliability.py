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

from iqeclip.cli import main
from tests.integration.conftest import MODEL


def _args(bench, out):
    return [
        "train-few",
        "--data_path",
        str(bench),
        *MODEL,
        "--shot",
        "2",
        "--epoch",
        "6",
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
